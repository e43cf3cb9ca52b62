"""--detector auto: a choice made on held-out normal training images with synthetic defects, never on test labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_synthetic_dataset, run_cli
from PIL import Image

from normalcy.detectors import DETECTORS
from normalcy.errors import InputError
from normalcy.evaluation.validation import CANDIDATES, synthetic_split
from normalcy.images.features import FeatureExtractor
from normalcy.images.io import list_files

# gaussian's threshold folds in the tests that call fit_tuned: what they check (trials, reads, warnings, the budget)
# does not depend on them, and each fold inverts every cell's covariance again (5 folds: most of a trial's time)
FOLDS = 2


def test_split_holds_out_normal_images_and_plants_a_defect_in_each(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "ds", n_train=20)
    train = list_files(root / "train" / "good")
    split = synthetic_split(train, tmp_path / "val", size=64)
    assert len(split.normal) == len(split.defective) == 4 and len(split.fit) == 16
    assert set(split.fit) < set(train) and len(set(split.fit)) == 16  # the other 4 are held out, not fitted on
    for normal, defect in zip(split.normal, split.defective):
        a, b = np.asarray(Image.open(normal)), np.asarray(Image.open(defect))
        assert a.shape == b.shape == (64, 64, 3)
        assert (np.abs(a.astype(int) - b.astype(int)).sum(-1) > 0).mean() >= 0.005  # a defect is there
    with pytest.raises(InputError, match="at least"):
        synthetic_split(train[:6], tmp_path / "few")


def test_with_backbone_keeps_every_other_option() -> None:
    """auto gives each candidate its own backbone, with the user's other extractor options unchanged."""
    ex = FeatureExtractor(image_size=(64, 96), precision="fp32", pool_grid=2)
    other = ex.with_backbone("efficientnet_lite2")
    assert other.spec.name == "efficientnet_lite2" and other.patch_levels == other.spec.patch_levels
    assert (other.size, other.precision, other.pool_grid) == ((64, 96), "fp32", 2)
    assert ex.with_backbone("efficientnet_lite0") is ex


@pytest.fixture(scope="module")
def auto_fit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One `normalcy fit -d auto` (64 px, 16 training images) and its model.json: the tests below check
    different properties of the same selection (a selection costs every candidate's fit). --input-norm own: the
    candidates alone, as choose_detector tries them (auto's extra normalisations are tested on their own)."""
    tmp = tmp_path_factory.mktemp("auto")
    root = make_synthetic_dataset(tmp / "ds", n_train=16)
    r = run_cli("fit", root / "train" / "good", "-o", tmp / "m", "-d", "auto", "--image-size", "64",
                "--input-norm", "own")
    assert r.returncode == 0, r.stderr
    return root, json.loads((tmp / "m" / "model.json").read_text())


def test_choice_is_a_candidate_with_its_validation_numbers(auto_fit: tuple[Path, dict]) -> None:
    choice = auto_fit[1]["choice"]  # choose_detector's (name, found, won), as fit_auto keeps them
    name, found, won = choice["chosen"], choice["validation_auroc"], choice["wins"]
    assert name in CANDIDATES and set(found) == set(CANDIDATES) and 0.0 <= won <= 1.0
    assert all(0.0 <= v <= 1.0 for v in found.values())
    # the first candidate stays unless the best other beats it in 95 % of bootstrap resamples
    assert name == (max(found, key=found.get) if won >= 0.95 else CANDIDATES[0])


def test_cli_fit_auto_records_the_choice(auto_fit: tuple[Path, dict], tmp_path: Path) -> None:
    root, meta = auto_fit
    assert meta["detector"] == meta["choice"]["chosen"] in CANDIDATES
    assert meta["extractor"]["backbone"] == DETECTORS[meta["detector"]].default_backbone  # no --backbone: its own
    r = run_cli("fit", root / "train" / "good", "-o", tmp_path / "m2", "-d", "auto", "--steps", "5")
    assert r.returncode == 1 and "do not apply" in r.stderr and "Traceback" not in r.stderr


def test_experimental_detectors_are_said_and_never_chosen(tmp_path: Path) -> None:
    experimental = {n for n, c in DETECTORS.items() if c.experimental}
    assert experimental == {"simplenet", "draem", "efficientad"} and not experimental & set(CANDIDATES)
    assert "Experimental" in " ".join(run_cli("fit", "--help").stdout.split())
    root = make_synthetic_dataset(tmp_path / "ds", n_train=6)
    r = run_cli("fit", root / "train" / "good", "-o", tmp_path / "m", "-d", "simplenet", "--steps", "2",
                "--image-size", "64")
    assert r.returncode == 0 and "simplenet is experimental" in " ".join(r.stderr.split()), r.stderr
    r = run_cli("fit", root / "train" / "good", "-o", tmp_path / "g", "--image-size", "64")
    assert r.returncode == 0 and "is experimental" not in r.stderr


def test_input_norm_auto_tries_both_and_the_model_keeps_its_choice(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "ds", n_train=16)
    r = run_cli("fit", root / "train" / "good", "-o", tmp_path / "m", "--input-norm", "auto", "--image-size", "64")
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert set(meta["choice"]["validation_auroc"]) == {"gaussian/own", "gaussian/imagenet", "gaussian/standard"}
    assert meta["extractor"]["input_norm"] == meta["choice"]["input_norm"] in ("own", "imagenet", "standard")
    # a model saved with ImageNet's normalisation loads with it; one from before the option loads as "own"
    r = run_cli("fit", root / "train" / "good", "-o", tmp_path / "i", "--input-norm", "imagenet", "--image-size", "64")
    assert r.returncode == 0, r.stderr
    from normalcy.detectors import load

    det = load(tmp_path / "i")
    assert det.extractor.input_norm == "imagenet" and det.extractor.spec.mean == (0.485, 0.456, 0.406)
    raw = json.loads((tmp_path / "m" / "model.json").read_text())
    del raw["extractor"]["input_norm"]
    (tmp_path / "m" / "model.json").write_text(json.dumps(raw))
    assert load(tmp_path / "m").extractor.spec.mean == (0.5, 0.5, 0.5)
    r = run_cli("fit", root / "train" / "good", "-o", tmp_path / "s", "--input-norm", "standard", "--image-size", "64")
    assert r.returncode == 0, r.stderr
    assert load(tmp_path / "s").extractor.spec.contrast == 0.25 and load(tmp_path / "m").extractor.spec.contrast is None
    r = run_cli("fit", root / "train" / "good", "-o", tmp_path / "x", "--input-norm", "bogus")
    assert r.returncode == 1 and "input normalisation 'bogus'" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("score-batch", root / "test", "-o", tmp_path / "zs", "--input-norm", "auto")
    assert r.returncode == 1 and "score-batch has none" in r.stderr and "Traceback" not in r.stderr


def test_with_input_norm_keeps_every_other_option() -> None:
    ex = FeatureExtractor(image_size=(64, 96), pool_grid=2, precision="fp32")
    other = ex.with_input_norm("imagenet")
    assert {k: v for k, v in other.config.items() if k != "input_norm"} == \
        {k: v for k, v in ex.config.items() if k != "input_norm"}
    assert other.spec.std == (0.229, 0.224, 0.225) and ex.spec.std == (0.5, 0.5, 0.5)
    assert other.with_backbone("efficientnet_lite2").input_norm == "imagenet"


def test_tune_tries_each_setting_left_open_and_records_the_choice(tmp_path: Path) -> None:
    """--tune: the settings the user left open are tried one at a time on the synthetic-defect split; the
    given ones (here --image-size) are not; model.json keeps what was chosen and every trial's AUROC."""
    root = make_synthetic_dataset(tmp_path / "ds", n_train=16)
    r = run_cli("fit", root / "train" / "good", "-o", tmp_path / "m", "--tune", "--image-size", "64",
                "--tune-budget", "0")
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    choice = meta["choice"]
    assert choice["budget"] == 0 and choice["skipped"] == []  # no limit: every trial ran
    r = run_cli("fit", root / "train" / "good", "-o", tmp_path / "m2", "--tune-budget", "2")
    assert r.returncode != 0 and "add --tune" in r.stderr  # a budget without --tune would be silently ignored
    assert set(choice["validation_auroc"]) == {"gaussian", "input_norm=imagenet", "input_norm=standard",
                                               "backbone=efficientnet_lite2", "pool_grid=2", "pool_grid=1"}
    assert set(choice["tuned"]) == {"input_norm", "backbone", "pool_grid"}  # image_size was given
    ex = meta["extractor"]
    assert (ex["input_norm"], ex["backbone"], ex["pool_grid"]) == tuple(choice["tuned"][k] for k in
                                                                        ("input_norm", "backbone", "pool_grid"))
    assert ex["image_size"] == 64
    # a setting changes only where the other value wins in most bootstrap resamples of the split
    for setting, first in {"input_norm": "own", "backbone": "efficientnet_lite0"}.items():
        assert (choice["tuned"][setting] != first) == (choice["wins"][setting] >= 0.95)
    # a person reading predict's run (run.json, report.html) sees what was chosen, without opening model.json
    r = run_cli("predict", tmp_path / "m", root / "test", "-o", tmp_path / "run", "--no-heatmaps")
    assert r.returncode == 0, r.stderr
    line = json.loads((tmp_path / "run" / "run.json").read_text())["chosen on normal images"]
    assert line.startswith("gaussian: input_norm ") and "validation AUROC gaussian " in line
    assert "chosen on normal images" in (tmp_path / "run" / "report.html").read_text()


def test_choice_line_shows_a_crafted_choice_as_text() -> None:
    from normalcy.detectors.base import choice_line

    line = choice_line({"chosen": "<b>x</b>" * 20, "tuned": [1, 2], "validation_auroc": {"a": "nan?", "b": 0.5}})
    assert line.startswith("<b>x</b><b>x</b>") and "a nan?" in line and "b 0.500" in line and len(line) < 400
    assert choice_line({}) == "None: input_norm None (validation AUROC -)"


def test_wins_is_a_paired_bootstrap_of_the_auroc() -> None:
    from normalcy.evaluation.validation import wins

    rng = np.random.default_rng(0)
    normal, defective = rng.normal(size=50), rng.normal(size=50) + 1.0
    assert wins((normal, defective), (normal, defective)) == 0.0  # a tie is no win
    assert wins((normal, defective + 3.0), (normal, defective)) == 1.0  # better in every resample
    assert wins((normal, defective), (normal, defective + 3.0)) == 0.0
    # one pair of six flipped: about a coin toss, not a reason to change a setting
    few = np.arange(6.0), np.arange(6.0) + 0.5
    flipped = few[0], few[1] + np.r_[1.0, 0, 0, 0, 0, 0]  # 0.5 -> 1.5: above one more normal image
    assert 0.3 < wins(flipped, few) < 0.95
    assert wins((np.r_[np.nan, normal[1:]], defective), (normal, defective)) >= 0.0  # an unread image: no error


def test_tune_candidates_keep_what_cannot_change() -> None:
    from normalcy.evaluation.validation import tune_candidates

    ex = FeatureExtractor(image_size=64, precision="fp32", pool_grid=2)
    assert tune_candidates("pool_grid", ex, "gaussian", []) == [2, 4, 1]  # the extractor's own first
    assert tune_candidates("pool_grid", ex, "patchcore", []) == []  # no pooled features there
    assert tune_candidates("input_norm", ex.with_input_norm("imagenet"), "gaussian", []) == ["imagenet", "own", "standard"]
    sizes = tune_candidates("image_size", ex, "gaussian", [])
    assert sizes[0] == (64, 64) and (224, 224) in sizes and (320, 320) in sizes
    tiled = FeatureExtractor(image_size=256, tile=128, precision="fp32")
    assert tune_candidates("image_size", tiled, "gaussian", []) == []
    with pytest.raises(InputError, match="not one of"):
        tune_candidates("colour", ex, "gaussian", [])


def test_tune_tries_standard_before_imagenet_on_low_contrast_images(tmp_path: Path) -> None:
    """Under a budget --tune may have time for one other normalisation: on grey, low-contrast images (a tile,
    an X-ray) the standardised one comes first, on photos ImageNet's; read from the normal images alone."""
    from normalcy.evaluation.validation import LOW_CONTRAST, image_contrast, tune_candidates

    rng = np.random.default_rng(0)
    for name, spread in (("flat", 10), ("photo", 70)):
        (tmp_path / name).mkdir()
        for i in range(4):
            pixels = np.clip(120 + spread * rng.standard_normal((32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / name / f"{i}.png")
    flat, photo = list_files(tmp_path / "flat"), list_files(tmp_path / "photo")
    assert image_contrast(flat) < LOW_CONTRAST < image_contrast(photo) and image_contrast([]) == 0.25
    ex = FeatureExtractor(image_size=64, precision="fp32")
    assert tune_candidates("input_norm", ex, "gaussian", flat) == ["own", "standard", "imagenet"]
    assert tune_candidates("input_norm", ex, "gaussian", photo) == ["own", "imagenet", "standard"]


def test_split_can_keep_the_images_aspect_ratio(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "ds", n_train=20)
    split = synthetic_split(list_files(root / "train" / "good"), tmp_path / "val", size=64, shape=(48, 96))
    for normal, defect in zip(split.normal, split.defective):
        assert np.asarray(Image.open(normal)).shape == np.asarray(Image.open(defect)).shape == (48, 96, 3)


def test_auto_with_tune_chooses_the_detector_first_then_its_settings(tmp_path: Path) -> None:
    """--detector auto --tune, through eval: the candidates are compared at their defaults, then the chosen one's
    settings; eval's JSON carries the choice. A given --backbone is not tuned."""
    root = make_synthetic_dataset(tmp_path / "ds", n_train=16)
    r = run_cli("eval", root, "-d", "auto", "--tune", "--image-size", "64", "--backbone", "efficientnet_lite0",
                "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    choice = out["choice"]
    assert out["detector"] == f"auto: {choice['chosen']}" and choice["chosen"] in CANDIDATES
    assert set(CANDIDATES) <= set(choice["validation_auroc"])
    assert "backbone" not in choice["tuned"] and "image_size" not in choice["tuned"]
    assert out["backbone"] == "efficientnet_lite0" and out["input_norm"] == choice["tuned"]["input_norm"]
    r = run_cli("score-batch", root / "test", "-o", tmp_path / "run", "--tune")
    assert r.returncode != 0 and "No such option" in r.stderr  # zero-shot has no normal images to tune on


def test_split_plants_each_kind_of_defect_in_turn(tmp_path: Path) -> None:
    from normalcy.evaluation.validation import VALIDATION_DEFECTS

    root = make_synthetic_dataset(tmp_path / "ds", n_train=40)
    train = list_files(root / "train" / "good")
    split = synthetic_split(train, tmp_path / "val", size=64, kinds=VALIDATION_DEFECTS)
    assert len(split.defective) == 8  # 20 % of 40: every kind once, the first twice
    for normal, defect in zip(split.normal, split.defective):
        a, b = np.asarray(Image.open(normal)).astype(int), np.asarray(Image.open(defect)).astype(int)
        assert (np.abs(a - b).sum(-1) > 0).any()  # something changed, however thin
    with pytest.raises(ValueError, match="choose from"):
        synthetic_split(train, tmp_path / "bad", kinds=("scratchy",))


def test_replace_shares_the_network_only_where_it_is_the_same() -> None:
    import torch

    ex = FeatureExtractor(image_size=64)
    grid, size, norm = ex.replace(pool_grid=2), ex.replace(image_size=96), ex.replace(input_norm="imagenet")
    assert grid.backbone is ex.backbone and size.backbone is ex.backbone  # traces made once serve both
    assert norm.backbone is ex.backbone and norm.map_key != ex.map_key  # the normalisation is the extractor's
    assert ex.replace(backbone="efficientnet_lite2").backbone is not ex.backbone
    x = torch.rand(2, 3, 64, 64)
    fresh = FeatureExtractor(image_size=64, pool_grid=2)
    torch.testing.assert_close(grid(x).pooled, fresh(x).pooled)


def test_tune_tries_pooling_grids_on_the_maps_it_has_and_finds_the_same(tmp_path: Path, monkeypatch) -> None:
    """The grids are tried on the backbone maps the chosen settings already made (MapCache): no image goes
    through the network again for them, the final fit takes the maps of the images the trials fitted on, no file is
    decoded twice, and every trial's validation AUROC is what it is without the cache."""
    import torch

    from normalcy.evaluation.validation import fit_tuned
    from normalcy.images.features import MapCache

    root = make_synthetic_dataset(tmp_path / "ds", n_train=16)
    train = list_files(root / "train" / "good")
    calls: list[int] = []
    reads: list[Path] = []
    real, read = FeatureExtractor.level_maps, FeatureExtractor._read_one
    monkeypatch.setattr(FeatureExtractor, "level_maps", lambda self, x, levels: calls.append(len(x)) or
                        real(self, x, levels))
    monkeypatch.setattr(FeatureExtractor, "_read_one", lambda self, path: reads.append(path) or read(self, path))
    ex = FeatureExtractor(image_size=64)
    cached = fit_tuned("gaussian", train, ex, ("pool_grid",), progress=False, budget=0, folds=FOLDS)
    assert ex.cache is None and cached.extractor.cache is None  # nothing held after tuning
    held, fit = 4, 12  # 20 % of 16 held out, each scored as it is and with a defect
    trial = fit + 2 * held
    fp32 = len(train) // 4 if ex.precision == "bf16" else 0  # the final fit's sample for threshold_fp32_ (no trial's)
    assert sum(calls) == trial + held + fp32  # one trial's images, then the final fit's held-out originals only
    assert len(reads) == len(set(reads)) == trial + held  # each file decoded once
    n_first = len(calls)
    monkeypatch.setattr(MapCache, "parts", lambda self, key, levels, paths: [None] * len(paths))
    plain = fit_tuned("gaussian", train, FeatureExtractor(image_size=64), ("pool_grid",), progress=False, budget=0,
                      folds=FOLDS)
    assert sum(calls[n_first:]) == 3 * trial + len(train) + fp32  # without it, every grid's trial and the fit again
    assert cached.choice["validation_auroc"] == plain.choice["validation_auroc"]
    torch.testing.assert_close(cached.scale_, plain.scale_)  # the final fit's maps are the same either way


def test_tune_warns_once_about_a_file_that_is_not_an_image(tmp_path: Path, caplog) -> None:
    """Every trial and the final fit read the training folder: a bad file is named once, and still listed as
    skipped by the final fit."""
    import logging

    from normalcy.evaluation.validation import fit_tuned

    root = make_synthetic_dataset(tmp_path / "ds", n_train=16)
    (root / "train" / "good" / "zz_bad.png").write_bytes(b"not an image")
    train = list_files(root / "train" / "good")
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        det = fit_tuned("gaussian", train, FeatureExtractor(image_size=64), ("pool_grid",), progress=False, budget=0,
                        folds=FOLDS)
    assert sum("zz_bad.png" in r.getMessage() for r in caplog.records) == 1
    # the note that a threshold rests on few images: the final fit's only (each trial printed it too)
    assert sum("the threshold rests on" in r.getMessage() for r in caplog.records) == 1
    assert len(det.choice["validation_auroc"]) == 3 and det.n_train_ == 16
    assert [p.name for p, _ in det.skipped_fit_] == ["zz_bad.png"]  # the final fit still names it


def test_tune_skips_the_trials_its_time_budget_cannot_afford(tmp_path: Path) -> None:
    """--tune-budget: a trial whose estimated cost, with the final fit's, would overrun the budget (in plain fits)
    is skipped and named in the choice; the settings it would have tried stay as they are."""
    from normalcy.evaluation.validation import fit_tuned

    root = make_synthetic_dataset(tmp_path / "ds", n_train=16)
    train = list_files(root / "train" / "good")
    det = fit_tuned("gaussian", train, FeatureExtractor(image_size=64), ("input_norm", "pool_grid"), progress=False,
                    budget=0.5, folds=FOLDS)  # less than the first trial has taken already
    assert det.choice["skipped"] == ["input_norm=standard", "input_norm=imagenet", "pool_grid=2", "pool_grid=1"]
    # (the synthetic textures are grey and low in contrast: standard is tried before imagenet)
    assert list(det.choice["validation_auroc"]) == ["gaussian"] and det.choice["budget"] == 0.5
    assert (det.extractor.input_norm, det.extractor.pool_grid) == ("own", 4)
    assert det.choice["tuned"] == {"input_norm": "own", "pool_grid": 4}


def test_map_cache_holds_within_its_budget_and_keeps_one_extractor() -> None:
    import torch

    from normalcy.images.features import MapCache

    a, b = FeatureExtractor(image_size=64), FeatureExtractor(image_size=64, input_norm="imagenet")
    maps = {"s8": torch.rand(3, 4, 8, 8)}
    cache = MapCache(budget=2 * 4 * 8 * 8 * 4)  # two images' maps
    cache.put(a.map_key, ("s8",), [Path("x"), Path("y"), Path("z")], maps)
    x, y, z = cache.parts(a.map_key, ("s8",), [Path("x"), Path("y"), Path("z")])
    assert x["s8"].shape == (4, 8, 8) and z is None and cache.bytes == 2 * 4 * 8 * 8 * 4  # over budget
    torch.testing.assert_close(y["s8"], maps["s8"][1])
    assert a.replace(pool_grid=2).map_key == a.map_key and b.map_key != a.map_key  # the same maps, other maps
    cache.keep(b.map_key)
    assert cache.parts(a.map_key, ("s8",), [Path("x")]) == [None] and cache.bytes == 0


def test_auto_tries_gaussian_with_imagenet_normalisation_unless_one_is_given(tmp_path: Path, monkeypatch) -> None:
    """--detector auto with no --input-norm lets the data choose the normalisation for gaussian too (one more
    trial, keyed gaussian/imagenet); a normalisation given stands."""
    from normalcy.api import ExtractorOptions
    from normalcy.evaluation import validation
    from normalcy.evaluation.validation import fit_detector

    root = make_synthetic_dataset(tmp_path / "ds", n_train=16)
    train = list_files(root / "train" / "good")
    assert ExtractorOptions().auto_norm and not ExtractorOptions(input_norm="own").auto_norm
    assert ExtractorOptions().input_norms == ("own",)  # every other detector: the weights' own
    det = fit_detector("auto", train, FeatureExtractor(image_size=32), auto_norm=True, progress=False)
    assert set(det.choice["validation_auroc"]) == {*CANDIDATES, "gaussian/imagenet", "gaussian/standard"}
    monkeypatch.setattr(validation, "_pick", lambda current, others, *args, **kw: ("gaussian/imagenet", 1.0))
    det = fit_detector("auto", train, FeatureExtractor(image_size=32), auto_norm=True, progress=False)
    assert (det.name, det.extractor.input_norm, det.choice["input_norm"]) == ("gaussian", "imagenet", "imagenet")
    monkeypatch.undo()
    plain = fit_detector("auto", train, FeatureExtractor(image_size=32), progress=False)
    assert set(plain.choice["validation_auroc"]) == set(CANDIDATES)


def test_detector_help_names_every_normalisation_auto_tries() -> None:
    """--help said auto tries gaussian "with ImageNet's normalisation too"; it tries the standard one as well."""
    from typing import get_args

    from normalcy.cli import DetectorArg
    from normalcy.evaluation.validation import AUTO_NORM_TRIALS

    text = get_args(DetectorArg)[1].help
    for detector, norm in AUTO_NORM_TRIALS:
        assert detector in text and norm in text.lower(), (norm, text)


@pytest.mark.parametrize("budget", [-1.0, float("nan"), float("inf")])
def test_tune_budget_that_is_no_number_of_fits_is_refused_before_any_fit(tmp_path: Path, budget: float) -> None:
    """A negative, NaN or infinite --tune-budget (the CLI takes inf, Python anything) was read as "no limit" and
    recorded in model.json as given or as null; it is one InputError, before any image is read."""
    import normalcy

    train = make_synthetic_dataset(tmp_path / "ds", n_train=9) / "train" / "good"
    with pytest.raises(InputError, match="^tune_budget must be"):
        normalcy.fit(train, tune=True, tune_budget=budget, progress=False)
    r = run_cli("fit", train, "-o", tmp_path / "m", "--tune", "--tune-budget", "inf")
    assert r.returncode == 1 and "--tune-budget must be" in r.stderr and "Traceback" not in r.stderr


def test_a_trial_that_cannot_fit_says_it_counts_the_images_left_after_the_split(tmp_path: Path) -> None:
    """Ten identical images with --detector auto: the first trial, fitted on the 6 left after holding out 4, said
    "all 6 training images are identical", a count the user never gave; it now says which images those are."""
    train = tmp_path / "same"
    train.mkdir()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    for k in range(10):
        image.save(train / f"{k}.png")
    r = run_cli("fit", train, "-o", tmp_path / "m", "-d", "auto", "--image-size", "32", "--precision", "fp32")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    message = " ".join(r.stderr.split())
    assert "left after holding out 4 for validation" in message and "identical" in message
    assert not (tmp_path / "m").exists()
