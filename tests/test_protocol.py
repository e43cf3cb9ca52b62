"""The shared detector contract: validated parameters, minimum training sets, seeding, records, learned state,
images as files or arrays, and the decision rule."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from normalcy.detectors import DETECTORS, Scored, Skipped, create
from normalcy.detectors.registry import load
from normalcy.errors import InputError
from normalcy.images.features import FeatureExtractor

# The least work each trained detector can do, so the contract tests stay fast.
TINY = {
    "simplenet": {"steps": 3, "time_budget": None, "hidden": 16, "batch_patches": 64},
    "draem": {"steps": 2, "time_budget": None, "input_size": 32, "base_width": 2},
    "efficientad": {"steps": 2, "teacher_steps": 2, "time_budget": None, "input_size": 32, "pool_size": 4},
}


@pytest.fixture(scope="module")
def fe() -> FeatureExtractor:
    return FeatureExtractor(image_size=64, precision="fp32")


def _images(folder: Path, n: int, seed: int = 0, constant: int | None = None) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        im = np.full((48, 48, 3), constant, np.uint8) if constant is not None else \
            rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
        p = folder / f"{i:02d}.png"
        Image.fromarray(im).save(p)
        out.append(p)
    return out


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_bad_parameters_are_refused_by_name(name: str, fe: FeatureExtractor) -> None:
    with pytest.raises(InputError, match="no_such_option"):
        create(name, fe, no_such_option=1)
    with pytest.raises(InputError, match="fpr"):
        create(name, fe, fpr=1.5)
    with pytest.raises(InputError, match="batch_size"):
        create(name, fe, batch_size=0)
    if "steps" in DETECTORS[name].Params.model_fields:
        with pytest.raises(InputError, match="steps"):
            create(name, fe, steps=0)
        with pytest.raises(InputError, match="time_budget"):
            create(name, fe, time_budget=-1)


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_params_round_trip_through_json(name: str, fe: FeatureExtractor) -> None:
    det = create(name, fe, **TINY.get(name, {}))
    again = create(name, fe, **det.params())
    assert again.params() == det.params()


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_too_few_training_images_is_a_clear_error(name: str, fe: FeatureExtractor, tmp_path: Path) -> None:
    cls = DETECTORS[name]
    paths = _images(tmp_path / "few", cls.min_images - 1)
    with pytest.raises(InputError, match=f"at least {cls.min_images}"):
        create(name, fe, **TINY.get(name, {})).fit(paths, progress=False)


def test_enough_files_but_too_few_readable_is_a_clear_error(fe: FeatureExtractor, tmp_path: Path) -> None:
    paths = _images(tmp_path / "some", 3)
    for i in range(3):
        (tmp_path / "some" / f"bad{i}.png").write_bytes(b"not an image")
        paths.append(tmp_path / "some" / f"bad{i}.png")
    with pytest.raises(InputError, match="at least 5 readable"):
        create("gaussian", fe).fit(paths, progress=False)


@pytest.mark.parametrize("readable", [1, 2])
def test_too_few_readable_images_end_the_fit_before_any_estimate(readable: int, fe: FeatureExtractor,
                                                                 tmp_path: Path) -> None:
    """One or two readable images of five: scikit-learn's "Only one sample available" warnings (six or twelve,
    one per cross-validation fold) came before normalcy's own error; the error alone now."""
    paths = _images(tmp_path / "some", readable)
    for i in range(5 - readable):
        (tmp_path / "some" / f"bad{i}.png").write_bytes(b"not an image")
        paths.append(tmp_path / "some" / f"bad{i}.png")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(InputError, match=f"at least 5 readable normal training images, got {readable}"):
            create("gaussian", fe).fit(paths, progress=False)
    assert [str(w.message) for w in seen] == []


@pytest.mark.parametrize("name", ["gaussian", "patchcore"])
def test_blank_training_images_are_refused(name: str, fe: FeatureExtractor, tmp_path: Path) -> None:
    """All-black images have no variation: every score would be the same, and the threshold meaningless."""
    paths = _images(tmp_path / "black", 8, constant=0)
    with pytest.raises(InputError, match="do not vary"):
        create(name, fe).fit(paths, progress=False)


def test_tiny_training_images_are_named_in_a_warning(fe: FeatureExtractor, tmp_path: Path, caplog) -> None:
    """A 1x1 icon among the training images is learned as normal, but the user hears of it, by name."""
    paths = _images(tmp_path / "train", 8)
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tmp_path / "train" / "icon.png")
    with caplog.at_level("WARNING", logger="normalcy"):
        create("gaussian", fe).fit(paths, progress=False)
    assert "px on a side" not in caplog.text  # 48 px images are fine
    with caplog.at_level("WARNING", logger="normalcy"):
        create("gaussian", fe).fit([*paths, tmp_path / "train" / "icon.png"], progress=False)
    assert "1 training image(s) are under 32 px on a side (icon.png 1x1)" in caplog.text


def test_nearly_black_training_images_are_named_in_a_warning(fe: FeatureExtractor, tmp_path: Path, caplog) -> None:
    """12-bit values in 16-bit PNGs (as industrial cameras write them) read at 16 of 255 at most: learned as black
    images without a word. Full-range 16-bit files and ordinary images are not named."""
    paths = _images(tmp_path / "train", 6)
    rng = np.random.default_rng(0)
    for name, top in (("full16.png", 65535), ("bits12_a.png", 4095), ("bits12_b.png", 4095)):
        Image.fromarray((rng.random((48, 48)) * top).astype(np.uint16)).save(tmp_path / "train" / name)
        paths.append(tmp_path / "train" / name)
    with caplog.at_level("WARNING", logger="normalcy"):
        create("gaussian", fe).fit(paths, progress=False)
    assert "2 training image(s) are nearly black, their brightest pixel under 32 of 255 (bits12_a.png, " \
           "bits12_b.png)" in caplog.text
    # an 8-bit black frame was told only to scale its 16 bits, which it has not
    assert "bits12_b.png): a blank frame (a capture that failed) is learned as normal; and 16-bit files" in caplog.text


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_fit_leaves_the_global_rng_alone_and_is_seeded(name: str, fe: FeatureExtractor, tmp_path: Path) -> None:
    paths = _images(tmp_path / "train", 8)
    test = _images(tmp_path / "test", 2, seed=1)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = create(name, fe, seed=4, **TINY.get(name, {})).fit(paths, progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    b = create(name, fe, seed=4, **TINY.get(name, {})).fit(paths, progress=False)
    np.testing.assert_array_equal(a.score(test, progress=False).scores, b.score(test, progress=False).scores)


@pytest.mark.parametrize("name", ["gaussian", "draem"])
def test_iter_score_yields_one_record_per_file_in_order(name: str, fe: FeatureExtractor, tmp_path: Path) -> None:
    paths = _images(tmp_path / "train", 8)
    det = create(name, fe, **TINY.get(name, {})).fit(paths, progress=False)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    files = [paths[0], bad, paths[1]]
    records = list(det.iter_score(files, batch_size=2))
    assert [type(r) for r in records] == [Skipped, Scored, Scored]  # a batch's skipped files come first
    assert sorted(str(r.path) for r in records) == sorted(str(p) for p in files)
    scored = [r for r in records if isinstance(r, Scored)]
    assert all(r.map.shape == (48, 48) and r.embedding is None for r in scored)
    assert all(r.anomalous == (r.score >= det.threshold_) for r in scored)
    with_emb = [r for r in det.iter_score(paths[:2], embeddings=True) if isinstance(r, Scored)]
    assert all(r.embedding is not None and r.embedding.ndim == 1 for r in with_emb)


@pytest.mark.parametrize("name", ["draem", "efficientad"])
def test_detectors_without_a_backbone_never_run_it_to_score(name: str, fe: FeatureExtractor, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    paths = _images(tmp_path / "train", 6)
    det = create(name, FeatureExtractor(image_size=64, precision="fp32"), **TINY[name]).fit(paths, progress=False)

    def no_backbone(*_a, **_k):
        raise AssertionError("the backbone ran")

    monkeypatch.setattr(det.extractor, "level_maps", no_backbone)
    records = list(det.iter_score(paths[:2]))
    assert len(records) == 2 and all(isinstance(r, Scored) for r in records)


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_learned_state_round_trips_and_wrong_shapes_are_named(name: str, fe: FeatureExtractor,
                                                             tmp_path: Path) -> None:
    paths = _images(tmp_path / "train", 8)
    det = create(name, fe, **TINY.get(name, {})).fit(paths, progress=False)
    state = det.state_dict()
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())
    fresh = create(name, fe, **det.params())
    fresh.load_state_dict(state)
    assert fresh.state_dict().keys() == state.keys()
    key = max(state, key=lambda k: state[k].numel())  # the biggest tensor, cut in half
    broken = {**state, key: state[key].flatten()[: max(1, state[key].numel() // 2)].clone()}
    with pytest.raises((ValueError, RuntimeError)):
        create(name, fe, **det.params()).load_state_dict(broken)
    missing = {k: v for k, v in state.items() if k != key}
    with pytest.raises((ValueError, RuntimeError), match=key.split(".")[0]):
        create(name, fe, **det.params()).load_state_dict(missing)


def test_a_non_square_input_size_keeps_the_aspect_ratio(tmp_path: Path) -> None:
    """Wide images need not be squashed: height x width sizes fit, score, save and load."""
    from normalcy.detectors import MuSc, load
    from normalcy.images.features import parse_size, size_for

    rng = np.random.default_rng(0)
    paths = []
    (tmp_path / "wide").mkdir()
    for i in range(8):
        p = tmp_path / "wide" / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (48, 96, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    assert size_for(paths) == (160, 320)  # 2:1, about 224 x 224 pixels, multiples of 32
    assert parse_size("64x128") == parse_size([64, 128]) == (64, 128) and parse_size(96) == (96, 96)
    for bad in ("0", "64x", "big", [64, 128, 3], 10_000):
        with pytest.raises(InputError):
            parse_size(bad)
    fe = FeatureExtractor(image_size=(64, 128), precision="fp32")
    for name in ("gaussian", "patchcore"):
        det = create(name, fe).fit(paths, progress=False)
        res = det.score(paths[:2], progress=False)
        assert all(m.shape == (48, 96) for m in res.maps)
        det.save(tmp_path / name)
        again = load(tmp_path / name)
        assert again.extractor.size == (64, 128)
        np.testing.assert_allclose(again.score(paths[:2], progress=False).scores, res.scores, rtol=1e-6)
    batch = MuSc(fe).score(paths, progress=False)
    assert all(m.shape == (48, 96) for m in batch.maps)


def test_an_extreme_aspect_ratio_keeps_the_input_to_about_224_squared(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """Past 1:49 the short side is at its least (32) and the long one grew on: 1x300 images gave a 32x3872 input,
    2x5000 ones 32x4096. The long side is kept to 1568 (about 224 x 224 pixels), said naming such files; up to
    1:49 nothing changed."""
    import logging

    from normalcy.images.features import size_for

    def folder(name: str, h: int, w: int, n: int = 3) -> list[Path]:
        (tmp_path / name).mkdir()
        for i in range(n):
            Image.new("RGB", (w, h), (90, 90, 90)).save(tmp_path / name / f"{i}.png")
        return sorted((tmp_path / name).iterdir())

    with caplog.at_level(logging.WARNING, logger="normalcy"):
        assert size_for(folder("line", 1, 300)) == (32, 1568)
        assert size_for(folder("scan", 2, 5000, 5)) == (32, 1568)
        assert size_for(folder("tall", 300, 1)) == (1568, 32)
        assert size_for(folder("tall2", 300, 1, 1), say=False) == (1568, 32)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 3 and "past 1:49 (3 of the 3 looked at: 0.png 300x1, 1.png 300x1, 2.png 300x1): input " \
        "size 32x1568 (height x width)" in said[0] and "0.png 5000x2, 1.png 5000x2, 2.png 5000x2, ..." in said[1]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        assert size_for(folder("wide40", 4, 160)) == (32, 1408)  # 1:40, as before
        assert size_for(folder("wide49", 2, 98)) == (32, 1568)  # 1:49 exactly
    assert caplog.records == []


def test_patchcore_without_reweighting_scores_the_plain_maximum(fe: FeatureExtractor, tmp_path: Path) -> None:
    """b = 1 leaves eq. 7 nothing to weigh against: the image score is the largest patch distance."""
    paths = _images(tmp_path / "train", 8)
    det = create("patchcore", fe, reweight_neighbours=1).fit(paths, progress=False)
    res = det.score(paths[:3], progress=False)
    np.testing.assert_allclose(res.scores, [grid.max() for grid in res.maps.grids], rtol=1e-6)


def test_patchcore_standardized_channels_are_saved_and_applied(fe: FeatureExtractor, tmp_path: Path) -> None:
    """standardize=True z-scores each channel with the training patches' mean and spread; a reloaded
    model scores the same, and the bank lives in the standardized space (channel means near 0)."""
    paths = _images(tmp_path / "train", 8)
    det = create("patchcore", fe, standardize=True, coreset_ratio=1.0, max_bank=100_000).fit(paths, progress=False)
    plain = create("patchcore", fe).fit(paths, progress=False)
    assert np.all(plain.shift_ == 0) and np.all(plain.scale_ == 1)
    assert not np.allclose(det.scale_, 1) and np.abs(det.bank_.mean(0)).max() < 1e-3
    det.save(tmp_path / "model")
    again = load(tmp_path / "model")
    np.testing.assert_allclose(again.score(paths[:2], progress=False).scores,
                               det.score(paths[:2], progress=False).scores, rtol=1e-6)


def test_a_score_at_the_threshold_is_anomalous(fe: FeatureExtractor, tmp_path: Path) -> None:
    """The one decision rule: score >= threshold is anomalous, just below it is normal."""
    paths = _images(tmp_path / "train", 8)
    det = create("gaussian", fe).fit(paths, progress=False)
    scores = det.score(paths[:3], progress=False).scores
    det.threshold_ = float(np.sort(scores)[1])  # exactly the middle score
    res = det.score(paths[:3], progress=False)
    np.testing.assert_array_equal(res.decisions, scores >= np.sort(scores)[1])
    assert res.decisions.sum() == 2
    flags = {r.path: r.anomalous for r in det.iter_score(paths[:3]) if isinstance(r, Scored)}
    assert list(flags.values()) == list(res.decisions)


@pytest.mark.parametrize("name", ["gaussian", "draem"])
def test_fit_and_score_take_image_arrays(name: str, fe: FeatureExtractor, tmp_path: Path) -> None:
    """Images as uint8 arrays give what the same images as PNG files give (PNG is lossless)."""
    paths = _images(tmp_path / "train", 8)
    pixels = np.stack([np.asarray(Image.open(p)) for p in paths])
    from_files = create(name, fe, **TINY.get(name, {})).fit(paths, progress=False)
    from_arrays = create(name, fe, **TINY.get(name, {})).fit(pixels, progress=False)
    assert from_arrays.threshold_ == from_files.threshold_
    np.testing.assert_array_equal(from_arrays.score(pixels[:2], progress=False).scores,
                                  from_files.score(paths[:2], progress=False).scores)
    res = from_arrays.score([pixels[0], pixels[1, :40]], progress=False)  # a list may mix sizes
    assert res.paths == [Path("array[0]"), Path("array[1]")] and res.maps[1].shape == (40, 48)
    with pytest.raises(InputError, match="image 1: expected an H x W x 3 uint8 array"):
        from_arrays.score([pixels[0], pixels[1].astype(np.float32)], progress=False)


def test_a_batch_keeps_the_originals_of_at_most_max_kept_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """predict keeps a batch's original images for their overlays: 32 photos of 64 megapixels were read at once
    and held, about 11 GB. A batch that keeps them is cut where their pixels (from the files' headers) would pass
    MAX_KEPT_PIXELS; ordinary batches, and batches that keep nothing, stay whole (their scores do not change)."""
    from normalcy.images import features
    from normalcy.images.features import FeatureExtractor

    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (40, 30), (i, i, i)).save(paths[-1])
    ex = FeatureExtractor()
    sizes = lambda keep: [len(b.paths) for b in ex.iter_batches(paths, 32, keep_images=keep, pooled=False,  # noqa: E731
                                                                 features=False)]
    assert sizes(True) == [5]
    monkeypatch.setattr(features, "MAX_KEPT_PIXELS", 2 * 40 * 30)
    assert sizes(True) == [2, 2, 1] and sizes(False) == [5]
    (tmp_path / "1.png").write_bytes(b"not an image")  # counts nothing: its read names it
    batches = list(ex.iter_batches(paths, 32, keep_images=True, pooled=False, features=False))
    assert [len(b.paths) for b in batches] == [2, 2] and [p.name for b in batches for p, _ in b.skipped] == ["1.png"]
