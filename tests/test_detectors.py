"""Detectors: fit/score on synthetic data, model files, bad input, calibration, PatchCore's coreset."""

from __future__ import annotations

import json
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DEFECT_BOX, texture
from PIL import Image

from normalcy.detectors import create, load
from normalcy.detectors.patchcore import chunked_coreset, greedy_coreset
from normalcy.errors import InputError, NotFittedError
from normalcy.evaluation.metrics import image_metrics
from normalcy.images.features import FeatureExtractor
from normalcy.images.io import list_files, load_dataset

NAMES = ("gaussian", "patchcore")
SIZE = 96


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    # Shared by the detectors of this module; its only state is a deterministic cache.
    return FeatureExtractor(image_size=SIZE)


@pytest.fixture(scope="module")
def cheap() -> FeatureExtractor:
    """For tests that fit many times: small images, small pooled Gaussians (fast inverses)."""
    return FeatureExtractor(image_size=64, pool_max_dim=512)


@pytest.fixture(scope="module", params=NAMES)
def fitted(request: pytest.FixtureRequest, synthetic_root: Path, extractor: FeatureExtractor):
    ds = load_dataset(synthetic_root)
    det = create(request.param, extractor).fit(ds.train, progress=False)
    return det, ds


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, tuple[int, int]]]:
    """Images of odd sizes and modes: name -> (path, (H, W))."""
    d = tmp_path_factory.mktemp("odd")
    rng = np.random.default_rng(7)
    rgb = texture(rng, 97, 131)
    out = {}
    Image.fromarray(rgb).save(d / "rgb.png")
    out["rgb"] = (d / "rgb.png", (97, 131))
    Image.fromarray(texture(rng, 131, 97)[:, :, 0]).save(d / "gray.png")
    out["gray_L"] = (d / "gray.png", (131, 97))
    rgba = np.dstack([texture(rng, 61, 203), np.full((61, 203), 200, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    out["rgba"] = (d / "rgba.png", (61, 203))
    g16 = texture(rng, 150, 77)[:, :, 0].astype(np.uint16) * 257
    Image.fromarray(g16).save(d / "gray16.png")
    assert Image.open(d / "gray16.png").mode.startswith("I")  # really a 16-bit file
    out["gray16"] = (d / "gray16.png", (150, 77))
    Image.fromarray(texture(rng, 33, 45)).save(d / "small.jpg", quality=90)
    out["small_jpg"] = (d / "small.jpg", (33, 45))
    return out


# ------------------------------------------------------------------ fit and score


def test_create_unknown_detector_raises():
    with pytest.raises(InputError, match="unknown detector"):
        create("nope", FeatureExtractor(image_size=64))


def test_bad_fpr_raises(extractor):
    for fpr in (0.0, 1.0, -0.1):
        with pytest.raises(InputError, match="fpr"):
            create("gaussian", extractor, fpr=fpr)


@pytest.mark.parametrize("name", NAMES)
def test_score_before_fit_raises(name, extractor, synthetic_root):
    det = create(name, extractor)
    with pytest.raises(NotFittedError):
        det.score(list_files(synthetic_root / "test" / "good"), progress=False)
    with pytest.raises(NotFittedError):
        det.save(synthetic_root.parent / "never")


def test_repr_names_the_parameters_set(extractor):
    """The repr was Python's ``<normalcy.detectors.patchcore.PatchCore object at 0x...>``, naming no parameter."""
    assert repr(create("gaussian", extractor)) == "GaussianAD()"
    assert repr(create("patchcore", extractor, fpr=0.05, coreset_ratio=0.2)) == "PatchCore(coreset_ratio=0.2, fpr=0.05)"


def test_unfitted_is_scikit_learns_not_fitted(extractor):
    """An unfitted detector's error was normalcy's alone: ``except sklearn.exceptions.NotFittedError`` (what the
    vector detectors raise, being scikit-learn estimators) missed it."""
    from sklearn.exceptions import NotFittedError as SklearnNotFitted

    det = create("gaussian", extractor)
    with pytest.raises(SklearnNotFitted, match="gaussian detector is not fitted"):
        det.score([np.zeros((64, 64, 3), np.uint8)], progress=False)


def test_parameters_set_after_construction_are_checked_at_fit(cheap):
    """``det.fpr = 5`` (an attribute is how a parameter is changed) was used unchecked: the fit failed at its end
    with numpy's "Quantiles must be in the range [0, 1]". It is refused before any work, as at construction;
    a value construction would convert (``"0.1"``) is converted."""
    images = np.random.default_rng(0).integers(0, 255, (6, 64, 64, 3), dtype=np.uint8)
    det = create("gaussian", cheap)
    det.fpr = 5
    with pytest.raises(InputError, match=r"detector gaussian: fpr must be a number between 0 and 1, both excluded \(got 5\)"):
        det.fit(images, progress=False)
    det = create("patchcore", cheap)
    det.coreset_ratio = 0
    with pytest.raises(InputError, match="detector patchcore: coreset_ratio"):
        det.fit(images, progress=False)


def _stub_fitted(extractor: FeatureExtractor, name: str = "gaussian"):
    """A detector fitted in no time: its ``_fit`` reads the images and returns a calibration (no learned arrays,
    so it cannot be saved)."""
    from normalcy.detectors.base import Calibration

    det = create(name, extractor)
    det._fit = lambda batches, held, progress: (list(batches), Calibration(np.arange(6.0), np.arange(6.0)))[1]
    return det.fit(np.random.default_rng(0).integers(0, 255, (6, 64, 64, 3), dtype=np.uint8), progress=False)


def test_get_params_set_params_and_clone(cheap):
    """Image detectors had no ``get_params``: ``sklearn.base.clone`` refused them. The parameters are
    ``__init__``'s (the extractor, fpr, batch_size, seed) and ``Params``' fields; clone gives an unfitted copy
    with the same ones (a tuple too, which pydantic rebuilt: clone refused that as a modified parameter)."""
    from sklearn.base import clone

    det = create("efficientad", cheap, fpr=0.05, channels=(8, 16, 16))
    params = det.get_params()
    assert set(params) == {"extractor", "fpr", "batch_size", "seed", *type(det).Params.model_fields}
    assert params["extractor"] is cheap and params["channels"] == (8, 16, 16)
    assert clone(det).get_params(deep=False).keys() == params.keys()
    with pytest.raises(ValueError, match=r"Invalid parameter 'steps_' for estimator EfficientAD\(.*'steps'"):
        det.set_params(steps_=3)
    with pytest.raises(ValueError, match="extractor is not an estimator with parameters of its own"):
        det.set_params(extractor__tile=2)  # scikit-learn's: "'FeatureExtractor' object has no attribute ..."
    fitted = _stub_fitted(cheap).set_params(fpr=0.05)
    fresh = clone(fitted)
    assert type(fresh).__name__ == "GaussianAD" and fresh.fpr == 0.05 and not hasattr(fresh, "threshold_")


def test_fpr_changed_after_fit_is_not_saved_beside_the_old_threshold(cheap, tmp_path):
    """``set_params(fpr=0.2)`` (or ``det.fpr = 0.2``) after fit, then ``save``: model.json named fpr 0.2 beside the
    threshold set at 0.01, a model that disagrees with itself (and loads, deciding at 0.01). Image detectors keep
    no calibration scores to set it again from: save and export say so; set back, the model saves as fitted."""
    from normalcy.scale.export import check_exportable

    images = np.random.default_rng(0).integers(0, 255, (8, 64, 64, 3), dtype=np.uint8)
    det = create("gaussian", cheap).fit(images, progress=False)
    det.set_params(fpr=0.2)
    message = r"detector gaussian: fpr is 0.2, but its threshold was set at fpr 0.01 when it was fitted"
    with pytest.raises(InputError, match=message):
        det.save(tmp_path / "m")
    with pytest.raises(InputError, match=message):
        check_exportable(det)  # the export's metadata names fpr and threshold too
    assert not (tmp_path / "m").exists()
    det.fpr = 0.01
    loaded = load(det.save(tmp_path / "m"))
    assert json.loads((tmp_path / "m" / "model.json").read_text())["fpr"] == 0.01
    loaded.set_params(fpr=0.3)
    with pytest.raises(InputError, match="fpr is 0.3, but its threshold was set at fpr 0.01"):
        loaded.save(tmp_path / "m2")


def test_grey_against_colour_is_said_once_per_run_and_scores_are_unchanged(cheap, tmp_path, caplog):
    """A model fitted on grey images (R = G = B, as magnetic_tile's) scored colour ones without a word, and one
    fitted on colour images grey ones: either is usually the wrong camera or folder. model.json records the
    training images' kind; scoring says once how many images are of the other kind, naming the first."""
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 255, (5, 64, 64, 3), dtype=np.uint8)
    grey = np.repeat(colour[:, :, :, :1], 3, axis=3)
    grey[1, :, :, 1] ^= 1  # a colour JPEG of a grey scene: channels a level apart, still grey
    det = create("gaussian", cheap).fit(grey, progress=False)
    assert det.train_colour_ == "grey"
    loaded = load(det.save(tmp_path / "m"))
    assert json.loads((tmp_path / "m" / "model.json").read_text())["train_colour"] == "grey"
    mixed = np.concatenate([grey[1:2], colour[:2]])

    def said(model, kind):  # the scores, and the warnings about grey and colour
        caplog.clear()
        model.train_colour_ = kind
        with caplog.at_level("WARNING", logger="normalcy"):
            scores = model.score(mixed, progress=False, batch_size=2).scores
        return scores, [r.getMessage() for r in caplog.records if "fitted on" in r.getMessage()]

    scores, warned = said(loaded, "grey")
    assert warned == ["gaussian: 2 of 3 images are colour; the model was fitted on grey images (the first: "
                      "array[1]): the wrong camera or folder?"]  # once, over the run's two batches
    assert said(loaded, "colour")[1] == ["gaussian: 1 of 3 images are grey; the model was fitted on colour "
                                         "images (the first: array[0]): the wrong camera or folder?"]
    unknown, warned = said(loaded, "unknown")  # a model saved before it was recorded: no word, the same scores
    assert not warned and np.array_equal(unknown, scores)
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    del meta["train_colour"]
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    assert load(tmp_path / "m").train_colour_ == "unknown"


def test_a_deep_copy_of_a_fitted_or_loaded_detector_scores_as_it(fitted, tmp_path):
    """``copy.deepcopy`` of an image detector failed with "cannot pickle '_thread.lock' object" (its backbone's)."""
    import copy

    det, ds = fitted
    want = det.score(ds.train[:1], progress=False).scores
    for twin in (copy.deepcopy(det), copy.deepcopy(load(det.save(tmp_path / "m")))):
        assert np.array_equal(twin.score(ds.train[:1], progress=False).scores, want)


def test_learned_attributes_appear_at_fit_and_load_only(fitted, tmp_path):
    """``threshold_`` (None), ``map_range_``, ``n_train_`` (0) and more existed before fit, so
    ``check_is_fitted`` (which also failed for want of scikit-learn's tags) and ``hasattr`` took an unfitted
    detector for a fitted one. They appear at fit, and at load."""
    from sklearn.exceptions import NotFittedError as SklearnNotFitted
    from sklearn.utils.validation import check_is_fitted

    det, _ = fitted
    fresh = create(det.name, det.extractor)
    assert not [k for k in vars(fresh) if k.endswith("_")]
    with pytest.raises(SklearnNotFitted):
        check_is_fitted(fresh)
    check_is_fitted(det)
    loaded = load(det.save(tmp_path / "m"))
    check_is_fitted(loaded)
    for key in ("threshold_", "threshold_fp32_", "map_range_", "n_train_"):
        assert getattr(loaded, key) == getattr(det, key), key
    assert loaded.skipped_fit_ == [] and repr(loaded) == repr(det)


def test_a_failed_refit_leaves_an_unfitted_detector(cheap):
    """A second fit refused midway kept the first fit's threshold beside whatever the second had learned; the
    learned state is dropped as a fit begins."""
    from sklearn.exceptions import NotFittedError as SklearnNotFitted
    from sklearn.utils.validation import check_is_fitted

    det = _stub_fitted(cheap)
    with pytest.raises(InputError, match="identical"):
        det.fit(np.zeros((6, 64, 64, 3), np.uint8), progress=False)
    with pytest.raises(SklearnNotFitted):
        check_is_fitted(det)
    with pytest.raises(NotFittedError):
        det.score(np.zeros((1, 64, 64, 3), np.uint8), progress=False)


def test_a_parameter_set_after_fit_is_checked_at_scoring_and_save(cheap, tmp_path):
    """``det.batch_size = 0`` (or ``set_params``) after fit was used unchecked by scoring, and ``save`` failed
    with pydantic's multi-line ValidationError dump: both are now the one-line error fit gives."""
    det = _stub_fitted(cheap).set_params(batch_size=0)
    message = "detector gaussian: batch_size: input should be greater than or equal to 1"
    with pytest.raises(InputError, match=message):
        det.score(np.zeros((1, 64, 64, 3), np.uint8), progress=False)
    with pytest.raises(InputError, match=message):
        det.save(tmp_path / "m")


def test_an_extractor_set_after_fit_is_refused_at_scoring(cheap):
    """``set_params(extractor=...)`` after fit scored with features the model never learned: another image size
    gave scores without a word (gaussian), another backbone a torch RuntimeError ("The size of tensor a (512)
    must match ..."). Scoring now names what differs; the fitted extractor back scores again."""
    det = _stub_fitted(cheap)
    det.set_params(extractor=FeatureExtractor(image_size=96, pool_max_dim=512))
    with pytest.raises(InputError, match=r"gaussian: its extractor is not the one it was fitted with: image_size "
                                         r"96 \(fitted: 64\); set that one back, or fit again"):
        det.score(np.zeros((1, 64, 64, 3), np.uint8), progress=False)
    det.set_params(extractor=cheap)._check_fitted()


def test_fit_with_labels_as_scikit_learn_is_called_is_refused(cheap):
    """``fit(X, y)`` took y for ``progress``: "The truth value of an array ... is ambiguous" from the progress bar."""
    images = np.zeros((6, 64, 64, 3), np.uint8)
    with pytest.raises(TypeError, match="positional argument"):
        create("gaussian", cheap).fit(images, np.zeros(6))


def test_a_second_fit_forgets_the_first_fits_choice(cheap):
    """``choice`` (what auto or --tune chose, on which images) survived a second ``fit`` on other images and was
    saved into that model's model.json as if it had been chosen for it."""
    from normalcy.detectors.base import Calibration

    images = np.random.default_rng(0).integers(0, 255, (6, 64, 64, 3), dtype=np.uint8)
    det = create("gaussian", cheap)
    det._fit = lambda batches, held, progress: (list(batches), Calibration(np.arange(6.0), np.arange(6.0)))[1]
    det.choice = {"chosen": "gaussian", "validation_auroc": {"gaussian": 0.9}}
    det.fit(images, progress=False)
    assert det.choice is None and det.threshold_ is not None


def test_one_path_is_a_folder_or_a_file(fitted, synthetic_root):
    """``det.fit("train/good")`` read the string one character per file ("none of the 10 training files could
    be read"), and ``det.fit(Path(...))`` was a TypeError: one path is one input, a folder's images or a file."""
    from normalcy.detectors.base import _items

    folder = synthetic_root / "train" / "good"
    assert _items(str(folder)) == _items(folder) == list_files(folder)
    det, _ = fitted
    assert len(det.score(str(synthetic_root / "test" / "good"), progress=False).scores) == 4
    one = list_files(synthetic_root / "test" / "good")[0]
    assert [p.name for p in det.score(one, progress=False).paths] == [one.name]


def test_fit_score_separates_planted_defects(fitted):
    det, ds = fitted
    assert det.n_train_ == len(ds.train) == 12
    assert det.skipped_fit_ == []
    assert np.isfinite(det.threshold_)
    lo, hi = det.map_range_
    assert np.isfinite(lo) and np.isfinite(hi) and hi > lo

    res = det.score([s.path for s in ds.test], progress=False)
    labels = np.array([s.label for s in ds.test])
    assert res.paths == [s.path for s in ds.test]
    assert res.skipped == []
    assert res.images is None
    assert res.scores.shape == (len(ds.test),) and np.isfinite(res.scores).all()
    np.testing.assert_array_equal(res.decisions, res.scores >= res.threshold)
    assert res.threshold == det.threshold_ and np.isfinite(res.threshold)
    assert res.scores[labels == 1].mean() > res.scores[labels == 0].mean()
    assert image_metrics(labels, res.scores)["image_auroc"] >= 0.95

    # Maps: original size, finite, and hot where the square was planted.
    for m in res.maps:
        assert m.shape == (SIZE, SIZE) and m.dtype == np.float32 and np.isfinite(m).all()
    inside = np.zeros((SIZE, SIZE), bool)
    inside[DEFECT_BOX] = True
    for m, y in zip(res.maps, labels):
        if y:
            assert m[inside].mean() > m[~inside].mean()


def test_maps_have_original_size_for_odd_inputs(fitted, odd_images):
    det, _ = fitted
    paths = [p for p, _ in odd_images.values()]
    res = det.score(paths, progress=False, keep_images=True, batch_size=2)
    assert res.skipped == []
    assert res.paths == paths
    for (p, (h, w)), m, im, s in zip(odd_images.values(), res.maps, res.images, res.scores):
        assert m.shape == (h, w), p.name
        assert im.shape == (h, w, 3) and im.dtype == np.uint8
        assert np.isfinite(m).all() and np.isfinite(s)
    np.testing.assert_array_equal(res.decisions, res.scores >= res.threshold)


def test_scores_do_not_depend_on_batch_size(fitted):
    det, ds = fitted
    paths = [s.path for s in ds.test]
    a = det.score(paths, progress=False, batch_size=1)
    b = det.score(paths, progress=False, batch_size=8)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-4, atol=1e-4)


def test_score_empty_list(fitted):
    det, _ = fitted
    res = det.score([], progress=False)
    assert res.paths == [] and res.maps == [] and res.scores.shape == (0,)


# ------------------------------------------------------------------ model directory


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    det, ds = fitted
    d = det.save(tmp_path_factory.mktemp(f"model_{det.name}") / "model")
    return det, ds, d


def test_model_dir_holds_json_and_safetensors_only(saved):
    det, _, d = saved
    assert sorted(p.name for p in d.iterdir()) == ["model.json", "model.safetensors"]
    meta = json.loads((d / "model.json").read_text())
    assert meta["detector"] == det.name
    assert meta["format_version"] == 1
    assert meta["threshold"] == det.threshold_
    assert meta["extractor"]["image_size"] == SIZE


def test_safetensors_file_is_plain_header_and_data(saved):
    _, _, d = saved
    raw = (d / "model.safetensors").read_bytes()
    assert not raw.startswith(b"\x80") and not raw.startswith(b"PK")  # neither a pickle nor torch.save's zip
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    assert tensors
    end = 0
    for info in tensors.values():
        assert set(info) == {"dtype", "shape", "data_offsets"}
        end = max(end, info["data_offsets"][1])
    assert len(raw) == 8 + n + end


def test_round_trip_gives_identical_results(saved, odd_images, monkeypatch):
    det, ds, d = saved
    paths = [s.path for s in ds.test] + [p for p, _ in odd_images.values()]
    before = det.score(paths, progress=False)

    def refuse(*_a, **_k):
        raise AssertionError("model loading must not unpickle")

    real_torch_load = torch.load

    def torch_load(f, *a, **k):  # built-in backbone weights may be read; the model may not
        if Path(str(f)).resolve().parent == d.resolve():
            refuse()
        return real_torch_load(f, *a, **k)

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", torch_load)
    again = load(d)
    monkeypatch.undo()

    assert type(again) is type(det)
    assert again.threshold_ == det.threshold_ and again.threshold_fp32_ == det.threshold_fp32_
    assert (det.threshold_fp32_ is not None) == (det.extractor.precision == "bf16")  # auto: bf16 where the CPU has it
    assert tuple(again.map_range_) == tuple(det.map_range_)
    assert again.n_train_ == det.n_train_
    assert again.params() == det.params()
    assert again.fpr == det.fpr
    assert again.extractor.config == det.extractor.config
    after = again.score(paths, progress=False)
    assert after.paths == before.paths
    np.testing.assert_array_equal(after.scores, before.scores)
    np.testing.assert_array_equal(after.decisions, before.decisions)
    assert len(after.maps) == len(before.maps)
    for a, b in zip(after.maps, before.maps):
        np.testing.assert_array_equal(a, b)


def test_load_rejects_other_format_version(saved, tmp_path):
    _, _, d = saved
    copy = shutil.copytree(d, tmp_path / "m")
    meta = json.loads((copy / "model.json").read_text())
    for version in (2, 0, None, "1"):
        meta["format_version"] = version
        (copy / "model.json").write_text(json.dumps(meta))
        with pytest.raises(InputError, match="format version"):
            load(copy)


def test_load_without_model_json_raises(saved, tmp_path):
    _, _, d = saved
    copy = shutil.copytree(d, tmp_path / "m")
    (copy / "model.json").unlink()
    with pytest.raises(InputError, match="model.json"):
        load(copy)
    with pytest.raises(InputError):
        load(tmp_path / "does_not_exist")


def test_load_invalid_json_raises(saved, tmp_path):
    _, _, d = saved
    copy = shutil.copytree(d, tmp_path / "m")
    (copy / "model.json").write_text("{not json")
    with pytest.raises(InputError, match="JSON"):
        load(copy)


def test_load_unknown_detector_raises(saved, tmp_path):
    _, _, d = saved
    copy = shutil.copytree(d, tmp_path / "m")
    meta = json.loads((copy / "model.json").read_text())
    meta["detector"] = "nope"
    (copy / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="unknown detector"):
        load(copy)


# ------------------------------------------------------------------ bad input


@pytest.fixture
def messy_folder(tmp_path: Path) -> tuple[Path, list[Path], list[Path]]:
    """Six good PNGs plus a zero-byte PNG, a truncated JPEG and a .txt file."""
    d = tmp_path / "messy"
    d.mkdir()
    rng = np.random.default_rng(3)
    good = []
    for i in range(6):
        p = d / f"good_{i}.png"
        Image.fromarray(texture(rng)).save(p)
        good.append(p)
    empty = d / "empty.png"
    empty.write_bytes(b"")
    full = d / "full.jpg"
    Image.fromarray(texture(rng)).save(full, quality=95)
    truncated = d / "truncated.jpg"
    truncated.write_bytes(full.read_bytes()[:600])
    full.unlink()
    note = d / "notes.txt"
    note.write_text("not an image\n")
    return d, good, [empty, truncated, note]


@pytest.mark.parametrize("name", NAMES)
def test_fit_skips_and_names_bad_files(name, messy_folder, cheap):
    d, good, bad = messy_folder
    det = create(name, cheap).fit(list_files(d), progress=False)
    assert det.n_train_ == len(good)
    assert sorted(p for p, _ in det.skipped_fit_) == sorted(bad)
    reasons = {p.name: r for p, r in det.skipped_fit_}
    assert "empty" in reasons["empty.png"]
    assert "truncated" in reasons["truncated.jpg"]
    assert all(isinstance(r, str) and r for r in reasons.values())
    assert np.isfinite(det.threshold_)

    paths = [good[0], bad[1], good[1], bad[0], bad[2], good[2]]
    res = det.score(paths, progress=False)
    assert res.paths == [good[0], good[1], good[2]]
    assert len(res.scores) == len(res.maps) == len(res.decisions) == 3
    assert sorted(p for p, _ in res.skipped) == sorted(bad)


def test_fit_on_only_bad_files_raises(messy_folder, cheap):
    _, _, bad = messy_folder
    for name in NAMES:
        with pytest.raises(InputError, match="could be read"):
            create(name, cheap).fit(bad * 2, progress=False)
    with pytest.raises(InputError, match="at least 5"):
        create("gaussian", cheap).fit([], progress=False)


def test_score_only_bad_files_gives_empty_result(fitted, messy_folder):
    det, _ = fitted
    _, _, bad = messy_folder
    res = det.score(bad, progress=False)
    assert res.paths == [] and len(res.scores) == 0
    assert len(res.skipped) == len(bad)


# ------------------------------------------------------------------ calibration


@pytest.mark.parametrize("name", NAMES)
def test_higher_fpr_gives_lower_or_equal_threshold(name, synthetic_root, cheap):
    train = load_dataset(synthetic_root).train
    strict = create(name, cheap, fpr=0.01).fit(train, progress=False)
    loose = create(name, cheap, fpr=0.2).fit(train, progress=False)
    assert np.isfinite(strict.threshold_) and np.isfinite(loose.threshold_)
    assert loose.threshold_ <= strict.threshold_


@pytest.mark.parametrize("name", NAMES)
def test_fit_is_deterministic(name, synthetic_root, cheap):
    ds = load_dataset(synthetic_root)
    paths = [s.path for s in ds.test]
    a, b = (create(name, cheap).fit(ds.train, progress=False) for _ in range(2))
    assert a.threshold_ == b.threshold_
    np.testing.assert_array_equal(a.score(paths, progress=False).scores, b.score(paths, progress=False).scores)


# ------------------------------------------------------------------ PatchCore


def test_greedy_coreset_picks_one_per_far_cluster():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(50, 4, generator=g) * 0.01
    b = torch.randn(30, 4, generator=g) * 0.01 + 100.0
    x = torch.cat([a, b])
    for seed in range(5):
        idx = greedy_coreset(x, 2, seed=seed)
        assert idx.shape == (2,)
        assert sorted(int(i) < 50 for i in idx) == [False, True]


def test_greedy_coreset_three_clusters_and_farthest_point():
    # Three clusters: k=3 covers each; the second pick is the farthest point from the first.
    pts = torch.tensor([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [10.1, 0.0], [0.0, 50.0], [0.0, 50.1]])
    idx = greedy_coreset(pts, 3, seed=1)
    clusters = {int(i) // 2 for i in idx}
    assert clusters == {0, 1, 2}
    first = int(idx[0])
    d = ((pts - pts[first]) ** 2).sum(1)
    assert d[int(idx[1])] == d.max()


def test_greedy_coreset_k_at_least_n_returns_all():
    x = torch.randn(7, 3)
    for k in (7, 8, 100):
        np.testing.assert_array_equal(greedy_coreset(x, k).numpy(), np.arange(7))
    idx = greedy_coreset(x, 5)
    assert len(set(idx.tolist())) == 5  # no point twice


def test_chunked_coreset_covers_every_cluster_at_a_fraction_of_the_cost():
    # 40 far-apart clusters, 4,000 points, a budget for 1/8 of the greedy cost: 8 chunks of 500. Each
    # chunk's greedy picks reach every cluster it holds, so the union covers all 40 like one greedy pass
    # would, and no point is picked twice.
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(40, 8, generator=g) * 100
    x = centres.repeat_interleave(100, 0) + torch.randn(4000, 8, generator=g)
    idx = chunked_coreset(x, 400, seed=3, budget=400 * 4000 / 8)
    assert len(idx) == 400 and len(set(idx.tolist())) == 400
    assert {int(i) // 100 for i in idx} == set(range(40))
    d_all = torch.cdist(x, x[idx]).min(1).values.max()  # covering radius of the union
    assert d_all < 10, d_all  # within a cluster's own spread (noise 1, 8 dims), not across clusters (~100s)
    np.testing.assert_array_equal(chunked_coreset(x, 400, seed=3, budget=200_000), idx)  # same seed, same picks
    # Within the budget: one greedy pass, exactly greedy_coreset.
    np.testing.assert_array_equal(chunked_coreset(x, 50, budget=50 * 4000), greedy_coreset(x, 50))


def test_patchcore_large_bank_is_searched_by_ivf_and_loads_the_same(synthetic_root, cheap, tmp_path):
    ds = load_dataset(synthetic_root)
    paths = [s.path for s in ds.test]
    ivf = create("patchcore", cheap, coreset_ratio=1.0, max_bank=10_000, exact_search_max=100, nprobe=1000)
    ivf.fit(ds.train, progress=False)
    exact = create("patchcore", cheap, coreset_ratio=1.0, max_bank=10_000).fit(ds.train, progress=False)
    assert len(ivf.bank_) > 100 and ivf.cells_.shape == (int(4 * np.sqrt(len(ivf.bank_))), ivf.bank_.shape[1])
    assert exact.cells_.shape == (0, exact.bank_.shape[1])
    a, b = ivf.score(paths, progress=False), exact.score(paths, progress=False)
    # nprobe above the cell count: every cell is visited, so IVF finds exactly the nearest patches.
    np.testing.assert_allclose(np.stack(list(a.maps)), np.stack(list(b.maps)), rtol=1e-4, atol=1e-4)
    ivf.save(tmp_path / "m")
    again = load(tmp_path / "m").score(paths, progress=False)
    np.testing.assert_array_equal(again.scores, a.scores)


@pytest.mark.parametrize("max_bank,ratio,expected", [(50, 0.1, 50), (4000, 0.01, 8), (4000, 0.1, 77)])
def test_patchcore_bank_size(max_bank, ratio, expected, synthetic_root, cheap):
    train = load_dataset(synthetic_root).train  # 12 images x 8x8 patches = 768
    det = create("patchcore", cheap, max_bank=max_bank, coreset_ratio=ratio).fit(train, progress=False)
    assert det.bank_.shape == (expected, det.bank_.shape[1])
    assert det.bank_.dtype == np.float32
    assert det.bank_image_.shape == (expected,)
    assert det.bank_image_.min() >= 0 and det.bank_image_.max() < len(train)
    assert det.bank_knn_.shape == (expected, min(det.reweight_neighbours, expected))
    assert len(det.state_dict()["bank"]) <= max_bank


# ------------------------------------------------------------------ real data


def test_gaussian_hazelnut_image_auroc(hazelnut):
    """A real quality bar: Gaussian AD at the default image size separates hazelnut_toy (1.0 when measured)."""
    ds = load_dataset(hazelnut)
    det = create("gaussian").fit(ds.train, progress=False)
    assert det.skipped_fit_ == []
    res = det.score([s.path for s in ds.test], progress=False)
    assert res.skipped == []
    labels = np.array([s.label for s in ds.test])
    metrics = image_metrics(labels, res.scores)
    assert metrics["image_auroc"] >= 0.97, metrics


def test_precision_is_resolved_and_saved(tmp_path, synthetic_root) -> None:
    """'auto' becomes bf16 or fp32 by what the CPU supports; the model records what was used."""
    from normalcy.errors import InputError as _InputError
    from normalcy.images.features import bf16_supported

    ex = FeatureExtractor(image_size=64, precision="auto")
    assert ex.precision == ("bf16" if bf16_supported() else "fp32")
    assert FeatureExtractor(image_size=64, precision="fp32").precision == "fp32"
    with pytest.raises(_InputError):
        FeatureExtractor(image_size=64, precision="fp8")
    train = sorted((synthetic_root / "train" / "good").iterdir())
    det = create("gaussian", FeatureExtractor(image_size=64, precision="fp32")).fit(train, progress=False)
    det.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "model.json").read_text())["extractor"]["precision"] == "fp32"
    assert load(tmp_path / "m").extractor.precision == "fp32"


# ------------------------------------------------------------------ gaussian: position-aware cells


def test_cell_gaussians_are_sklearns_ledoit_wolf() -> None:
    from sklearn.covariance import ledoit_wolf

    from normalcy.numerics.stats import gaussians

    x = np.random.default_rng(0).normal(size=(40, 3, 12)) @ np.random.default_rng(1).normal(size=(12, 12))
    means, precisions = gaussians(x)
    for i in range(3):
        cov, _ = ledoit_wolf(x[:, i])
        np.testing.assert_allclose(means[i], x[:, i].mean(0))
        np.testing.assert_allclose(precisions[i], np.linalg.inv(cov), rtol=1e-6)


def test_fewer_rows_than_dimensions_give_sklearns_ledoit_wolf() -> None:
    """The Gram-matrix path (n < D: cross-validation of pooled features) is scikit-learn's Gaussian, not an
    approximation of it: precision and distances agree to rounding, on either side of n = D."""
    from sklearn.covariance import ledoit_wolf

    from normalcy.numerics.stats import distance, distance_to, gaussian

    rng = np.random.default_rng(0)
    for n, d in ((30, 200), (200, 30), (3, 5)):
        x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.1 + rng.normal(size=d)
        q = rng.normal(size=(25, d)) @ rng.normal(size=(d, d)) * 0.1
        cov, _ = ledoit_wolf(x)
        want = distance(q, x.mean(0), np.linalg.inv(cov))
        mean, precision = gaussian(x)
        np.testing.assert_allclose(precision, np.linalg.inv(cov), rtol=1e-7, atol=1e-9 * np.abs(precision).max())
        np.testing.assert_allclose(distance(q, mean, precision), want, rtol=1e-8)
        np.testing.assert_allclose(distance_to(x, q), want, rtol=1e-8)
    flat = np.ones((5, 8))  # no variance at all: the plain path inverts with a tiny ridge, no error
    assert np.isfinite(distance_to(flat, flat)).all()


def _aligned(folder: Path, n: int, seed: int, moved: bool = False) -> list[Path]:
    """Noise images with one bright square, always in the same place unless ``moved``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        im = (rng.random((64, 128, 3)) * 60 + 60).astype(np.uint8)
        y, x = (8, 88) if moved else (8, 8)
        im[y : y + 24, x : x + 24] = 230
        paths.append(folder / f"{i:03d}.png")
        Image.fromarray(im).save(paths[-1])
    return paths


def test_cells_follow_the_aspect_ratio_and_see_a_moved_part(tmp_path: Path) -> None:
    """A part in the wrong place: every patch looks normal and the whole-image average is the same,
    but its cells are not. The grid has square cells on a 1:2 image."""
    train = _aligned(tmp_path / "train", 24, 0)
    normal = _aligned(tmp_path / "normal", 8, 1)
    moved = _aligned(tmp_path / "moved", 8, 2, moved=True)
    ex = FeatureExtractor(image_size=(64, 128), pool_grid=1, pool_max_dim=512, precision="fp32")
    assert create("gaussian", ex, cells=0).fit(train, progress=False).cell_mean_.shape[0] == 0
    det = create("gaussian", ex, cells=4).fit(train, progress=False)
    assert det.cell_mean_.shape == (4 * 8, len(det.patch_mean_))
    res = det.score(normal + moved, progress=False)
    assert image_metrics(np.array([0] * 8 + [1] * 8), res.scores)["image_auroc"] == 1.0
    # the map points at it too (the cells' term): the place the part left and the one it took stand out
    part = np.zeros((64, 128), bool)
    part[8:32, 8:32] = part[8:32, 88:112] = True
    lift = [np.asarray(m)[part].mean() - np.asarray(m)[~part].mean() for m in res.maps]
    assert min(lift[8:]) > max(lift[:8]) + 1.0


def test_cells_of_a_very_wide_input_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 4000x200 image (input 64x992) had 8 x 124 cells, a Gaussian each: a 217 MB model, minutes to fit 8
    images. Past 1:4 the cells grow longer: at most 4 times ``cells`` along the longer side. A model saved
    before the bound still loads and scores as it did."""
    from normalcy.detectors import gaussian

    rng = np.random.default_rng(0)
    train = [(rng.random((16, 256, 3)) * 200).astype(np.uint8) for _ in range(6)]
    ex = FeatureExtractor(image_size=(32, 512), patch_levels=["s8"], pooled_levels=["s8"], pool_grid=1,
                          precision="fp32")  # 4 x 64 patches
    det = create("gaussian", ex, cells=2).fit(train, progress=False)
    assert det._grid(4, 64) == (2, 8) and det.cell_mean_.shape[0] == 16
    assert det._grid(4, 16) == (2, 8) and det._grid(4, 8) == (2, 4)  # up to 1:4, square cells as before
    monkeypatch.setattr(gaussian, "MAX_CELL_RATIO", 1000)  # a model fitted before the bound
    old = create("gaussian", ex, cells=2).fit(train, progress=False)
    assert old.cell_mean_.shape[0] == 2 * 32
    old.save(tmp_path / "old")
    monkeypatch.undo()
    again = load(tmp_path / "old")
    assert again.cell_mean_.shape[0] == 2 * 32
    np.testing.assert_allclose(again.score(train[:2], progress=False).scores,
                               old.score(train[:2], progress=False).scores, rtol=1e-6)


@pytest.mark.parametrize("size, batch", [(224, 8), (1024, 8), (2048, 2), (4096, 1)])
def test_large_inputs_go_fewer_to_a_batch(size: int, batch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 4096 x 4096 input holds about 2.3 GB of activations: eight to a batch took a fit of 9 images past
    18 GB. Batches hold at most BATCH_PIXELS of input, and small inputs keep the batch size."""
    det = create("gaussian", FeatureExtractor(image_size=size))
    seen: list[int] = []
    monkeypatch.setattr(det.extractor, "iter_batches", lambda paths, n, **kw: seen.append(n) or iter(()))
    list(det._batches([Path("a.png")] * 9))
    assert seen == [batch]
