"""DRAEM: Perlin noise, synthetic anomalies, training, calibration, model files, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import texture
from PIL import Image

from normalcy.detectors import DRAEM, load
from normalcy.detectors.networks import focal_loss, ssim
from normalcy.errors import InputError
from normalcy.images.features import FeatureExtractor
from normalcy.images.io import load_dataset
from normalcy.images.synthetic import add_anomaly, perlin_mask, perlin_noise, synthesize

TINY = {"input_size": 64, "base_width": 4, "train_batch_size": 4, "time_budget": None}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The networks here are tiny: a second thread gains little, and on busy shared cores
    OpenMP's barriers made 2 threads ~7x slower than 1 (3 s vs 20 s for 10 steps)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    return FeatureExtractor(image_size=64, precision="fp32")


def make(extractor: FeatureExtractor, steps: int = 6, seed: int = 0, **kw) -> DRAEM:
    return DRAEM(extractor, steps=steps, seed=seed, **{**TINY, **kw})


def eval_paths(ds) -> list[Path]:
    return [s.path for s in ds.test]


@pytest.fixture(scope="module")
def fitted(synthetic_root: Path, extractor: FeatureExtractor):
    ds = load_dataset(synthetic_root)
    return make(extractor, steps=8).fit(ds.train, progress=False), ds


# ------------------------------------------------------------------ synthetic anomalies


def test_perlin_noise_shape_range_and_seed():
    a = perlin_noise((48, 80), (4, 5), np.random.default_rng(1))
    assert a.shape == (48, 80) and a.dtype == np.float32
    assert np.abs(a).max() <= np.sqrt(0.5) + 1e-5
    assert a.std() > 0.05  # not flat
    np.testing.assert_array_equal(a, perlin_noise((48, 80), (4, 5), np.random.default_rng(1)))
    assert not np.array_equal(a, perlin_noise((48, 80), (4, 5), np.random.default_rng(2)))
    # Sizes that are not a multiple of the lattice, and the paper's finest scale, work too.
    assert perlin_noise((37, 64), (64, 3), np.random.default_rng(0)).shape == (37, 64)


def test_perlin_mask_is_binary_and_seeded():
    masks = [perlin_mask(64, np.random.default_rng(s)) for s in range(20)]
    for m in masks:
        assert m.shape == (64, 64) and set(np.unique(m)) <= {0.0, 1.0}
    assert any(m.any() for m in masks) and any(0.0 < m.mean() < 0.5 for m in masks)
    np.testing.assert_array_equal(masks[3], perlin_mask(64, np.random.default_rng(3)))


def test_anomaly_changes_the_image_exactly_inside_the_mask():
    rng = np.random.default_rng(0)
    pool = torch.from_numpy(np.stack([texture(rng, 64, 64) for _ in range(3)])).permute(0, 3, 1, 2).contiguous()
    image = pool[0].permute(1, 2, 0).numpy().astype(np.float32) / 255.0
    found = 0
    for seed in range(30):
        aug, mask = synthesize(image, pool, np.random.default_rng(seed), anomaly_prob=1.0)
        assert aug.shape == image.shape and mask.shape == image.shape[:2]
        changed = np.abs(aug - image).max(-1) > 0
        assert not changed[mask == 0].any(), "pixels outside the mask changed"
        if mask.any():
            found += 1
            assert changed[mask == 1].mean() > 0.9, "the mask marks pixels that did not change"
    assert found >= 10
    # No anomaly: the image comes back unchanged with an empty mask.
    aug, mask = synthesize(image, pool, np.random.default_rng(0), anomaly_prob=0.0)
    np.testing.assert_array_equal(aug, image)
    assert not mask.any()
    # The paper's blend: beta = 1 puts the texture itself inside the mask.
    tex = np.zeros_like(image)
    m = np.zeros(image.shape[:2], np.float32)
    m[10:20, 5:30] = 1
    out = add_anomaly(image, tex, m, 1.0)
    np.testing.assert_array_equal(out[m == 1], 0.0)
    np.testing.assert_array_equal(out[m == 0], image[m == 0])


def test_losses():
    x = torch.rand(2, 3, 32, 32)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-5)
    assert ssim(x, torch.rand(2, 3, 32, 32)).item() < 0.5
    target = (torch.rand(2, 32, 32) > 0.8).float()
    right = torch.stack([(1 - target) * 8 - 4, target * 8 - 4], 1)
    assert focal_loss(right, target).item() < 1e-3 < focal_loss(-right, target).item()


# ------------------------------------------------------------------ training and scoring


def test_training_lowers_the_loss(synthetic_root: Path, extractor: FeatureExtractor):
    ds = load_dataset(synthetic_root)
    det = make(extractor, steps=20).fit(ds.train, progress=False)
    losses = det.train_log_.losses  # running (smoothed) loss; the first is the first step's
    assert det.train_log_.steps == 20 and det.train_log_.stopped_by == "steps"
    assert losses[-1] < 0.9 * losses[0]


def test_fit_score_and_maps_at_original_size(fitted, tmp_path: Path):
    det, ds = fitted
    assert det.n_train_ == 12 and np.isfinite(det.threshold_)
    sizes = [(50, 70), (64, 64), (90, 40)]
    paths = []
    rng = np.random.default_rng(5)
    for i, (h, w) in enumerate(sizes):
        p = tmp_path / f"{i}.png"
        Image.fromarray(texture(rng, h, w)).save(p)
        paths.append(p)
    res = det.score(paths, progress=False)
    assert [m.shape for m in res.maps] == sizes
    assert res.scores.shape == (3,)
    for m, s in zip(res.maps, res.scores):
        assert m.dtype == np.float32 and m.min() >= 0.0 and m.max() <= 1.0 + 1e-6
        assert 0.0 <= s <= 1.0


def test_save_load_identical(fitted, tmp_path: Path):
    det, ds = fitted
    before = det.score(eval_paths(ds), progress=False)
    det.save(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["detector"] == "draem" and meta["params"] == det.params()
    assert meta["training"]["steps"] == 8
    back = load(tmp_path / "model")
    assert isinstance(back, DRAEM) and back.params() == det.params()
    after = back.score(eval_paths(ds), progress=False)
    np.testing.assert_array_equal(before.scores, after.scores)
    for a, b in zip(before.maps, after.maps):
        np.testing.assert_array_equal(a, b)
    assert back.threshold_ == det.threshold_


def test_same_seed_same_scores(synthetic_root: Path, extractor: FeatureExtractor):
    ds = load_dataset(synthetic_root)
    a, b = (make(extractor, steps=4, seed=7).fit(ds.train, progress=False) for _ in range(2))
    np.testing.assert_array_equal(a.train_log_.losses, b.train_log_.losses)
    ra, rb = a.score(eval_paths(ds), progress=False), b.score(eval_paths(ds), progress=False)
    np.testing.assert_array_equal(ra.scores, rb.scores)
    np.testing.assert_array_equal(ra.maps[0], rb.maps[0])
    assert a.threshold_ == b.threshold_


def test_interrupt_keeps_a_usable_model(synthetic_root: Path, extractor: FeatureExtractor,
                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import normalcy.detectors.draem as draem_module

    loss, calls = draem_module.focal_loss, []

    def interrupted(*args, **kwargs):  # Ctrl-C during the fourth training step
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return loss(*args, **kwargs)

    monkeypatch.setattr(draem_module, "focal_loss", interrupted)
    ds = load_dataset(synthetic_root)
    det = make(extractor, steps=50).fit(ds.train, progress=False)
    assert det.train_log_.steps == 3 and det.train_log_.interrupted
    assert det.train_log_.stopped_by == "interrupt"
    res = det.score(eval_paths(ds), progress=False)
    assert len(res.scores) == len(ds.test) and np.isfinite(det.threshold_)
    det.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["training"]["stopped_by"] == "interrupt"
    np.testing.assert_array_equal(load(tmp_path / "m").score(eval_paths(ds), progress=False).scores, res.scores)


def test_too_short_a_training_is_named_not_the_images(synthetic_root: Path, extractor: FeatureExtractor):
    """One step leaves DRAEM scoring every image alike (as a short --time-budget does): the error said "identical
    or blank images?" of varied images; it names the training."""
    ds = load_dataset(synthetic_root)
    with pytest.raises(InputError, match=r"all score the same .*after 1 training step\(s\) \(its steps were done\)"
                                         r".* train longer \(steps, time_budget\)") as err:
        make(extractor, steps=1, holdout=0.5).fit(ds.train[:4], progress=False)
    assert "blank" not in str(err.value)


def test_too_short_a_training_on_one_held_out_image_is_said(synthetic_root: Path, extractor: FeatureExtractor,
                                                           caplog: pytest.LogCaptureFixture):
    """With one held-out image (fewer than 15 training images) the check above could not run: one step's DRAEM
    gave every image the threshold's score, flagging all of them without a word. It is a warning now."""
    ds = load_dataset(synthetic_root)
    with caplog.at_level("WARNING", logger="normalcy"):
        det = make(extractor, steps=1).fit(ds.train[:4], progress=False)
    assert "training image(s) all score" in caplog.text and "train longer (steps" in caplog.text, caplog.text
    assert det.score(eval_paths(ds)[:2], progress=False).decisions.all()  # the case warned of


def test_nearly_equal_held_out_scores_count_as_equal(extractor: FeatureExtractor):
    """Held-out scores a few 1e-7 apart passed the check for exactly equal scores (to a billionth): the threshold
    then sat among them and flagged nothing or everything. A real short fit's spread (one step on hazelnut_toy:
    2.7e-5) still sets a threshold."""
    from normalcy.detectors.base import Calibration

    det = DRAEM(extractor)
    with pytest.raises(InputError, match=r"all score the same \(0\.5\)"):
        det._set_threshold(Calibration(np.array([0.5, 0.5 + 3e-7, 0.5 - 4e-7]), np.zeros(4)))
    det._set_threshold(Calibration(np.array([0.465075433, 0.465072155, 0.465048552]), np.zeros(4)))
    assert 0.46504 < det.threshold_ < 0.46508


@pytest.mark.parametrize("budget", [float("nan"), float("inf")])
def test_a_time_budget_that_is_not_a_number_is_named_so(budget: float):
    """``--time-budget nan`` said "input should be less than or equal to 2592000 (got NaN)"."""
    with pytest.raises(InputError, match=r"time_budget: input should be a finite number \(got (NaN|inf)\)"):
        DRAEM(FeatureExtractor(image_size=64), time_budget=budget)


def test_eval_json_names_the_input_draem_scores(synthetic_root: Path, extractor: FeatureExtractor):
    """``eval --json`` gave DRAEM the backbone, normalisation and pool grid of a feature extractor it never runs
    and not its own input_size; it gives what it scores with, as the report does."""
    from normalcy.evaluation.evaluate import run_eval

    ds = load_dataset(synthetic_root)
    out, _, _ = run_eval(ds, "draem", extractor, progress=False, latency_images=0,
                         detector_kwargs={"steps": 1, **TINY, "input_size": 96})
    assert (out["backbone"], out["input_norm"], out["pool_grid"], out["input_size"]) == (None, None, None, 96)
    assert out["image_size"] == 64
    from normalcy.detectors import GaussianAD
    from normalcy.detectors.base import own_input_size

    assert own_input_size(GaussianAD(extractor)) is None  # a feature detector keeps its backbone's entries


def test_report_names_the_input_draem_scores(extractor: FeatureExtractor):
    """The report said "backbone efficientnet_lite0, input 64x64 px, own normalisation": DRAEM scores with neither
    the backbone nor its normalisation, at its own input_size."""
    from normalcy.detectors import GaussianAD
    from normalcy.detectors.base import report_info

    info = report_info(make(extractor, input_size=96))
    assert info["input"] == "64x64 px, then 96x96 px for its own networks (input_size)"
    assert info["backbone"] == "efficientnet_lite0 (not run when scoring)"
    assert report_info(GaussianAD(extractor))["input"] == "64x64 px, own normalisation"


def test_bad_files_are_skipped(synthetic_root: Path, extractor: FeatureExtractor, tmp_path: Path):
    ds = load_dataset(synthetic_root)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    det = make(extractor, steps=2).fit([*ds.train[:5], empty, text], progress=False)
    assert {p for p, _ in det.skipped_fit_} == {empty, text}
    assert det.n_train_ == 5
    res = good = eval_paths(ds)[:2]
    res = det.score([good[0], text, good[1]], progress=False)
    assert res.paths == good
    assert [p for p, _ in res.skipped] == [text]


def test_single_training_image_and_bad_parameters(synthetic_root: Path, extractor: FeatureExtractor):
    ds = load_dataset(synthetic_root)
    with pytest.raises(InputError, match="at least 2"):  # one image to train on, none to set a threshold
        make(extractor, steps=2).fit(ds.train[:1], progress=False)
    for bad, field in (({"input_size": 48}, "input_size"), ({"steps": 0}, "steps"), ({"base_width": 1}, "base_width"),
                       ({"time_budget": 0}, "time_budget"), ({"stepz": 3}, "stepz")):
        with pytest.raises(InputError, match=field):
            DRAEM(extractor, **bad)
    json.dumps(DRAEM(FeatureExtractor(image_size=64)).params())
