"""High resolution: maps held at the patch grid and drawn when read, pixel metrics at a capped side."""

from __future__ import annotations

import warnings
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from normalcy.detectors import Result, create
from normalcy.detectors.base import Maps, Scored
from normalcy.evaluation.evaluate import (
    METRIC_SIDE,
    masks_for,
    metric_size,
    pixel_inputs,
)
from normalcy.evaluation.metrics import pixel_metrics
from normalcy.images.features import FeatureExtractor, upsample_map
from normalcy.images.io import MaskSizeWarning, MaskTurnedWarning, Sample, read_mask


def _noise_fitted(folder: Path, size: tuple[int, int]) -> tuple:
    """A gaussian fitted on 6 noise PNGs of ``size`` written in ``folder``, and the paths of those and 3 more."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(9):
        paths.append(folder / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(paths[-1])
    return create("gaussian", FeatureExtractor(image_size=64, precision="fp32")).fit(paths[:6], progress=False), paths


def _grid(seed: int, h: int = 10, w: int = 20) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w)).astype(np.float32)


def test_maps_are_drawn_at_each_images_size_when_read() -> None:
    grids = [_grid(0), _grid(1, 6, 6)]
    maps = Maps(grids, [(800, 1600), (37, 53)])
    assert len(maps) == 2 and [m.shape for m in maps] == [(800, 1600), (37, 53)]
    np.testing.assert_array_equal(maps[1], upsample_map(grids[1], (37, 53)))
    np.testing.assert_array_equal(maps[-1], maps[1])
    assert maps.at(0, (100, 200)).shape == (100, 200)
    assert maps == [maps[0], maps[1]] and maps != [maps[0]] and Maps([], []) == []
    with pytest.raises(ValueError):
        Maps(grids, [(8, 8)])


def test_score_holds_patch_grids_and_its_maps_match_iter_score(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(64, 64)] * 6 + [(90, 170), (41, 33)]):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    det = create("gaussian", FeatureExtractor(image_size=64, precision="fp32")).fit(paths[:6], progress=False)
    res = det.score(paths[6:], progress=False)
    assert isinstance(res.maps, Maps) and res.maps.sizes == [(90, 170), (41, 33)]
    assert all(g.shape == (8, 8) for g in res.maps.grids)  # the 64 px input's stride-8 grid, not 90x170
    streamed = [r for r in det.iter_score(paths[6:]) if isinstance(r, Scored)]
    for m, rec in zip(res.maps, streamed):
        assert m.shape == rec.image.shape[:2] and m.dtype == np.float32
        np.testing.assert_allclose(m, rec.map, rtol=1e-5, atol=1e-6)


def test_metric_size_caps_the_long_side_and_keeps_small_images() -> None:
    assert metric_size((800, 1600)) == (256, 512)
    assert metric_size((1600, 800)) == (512, 256)
    assert metric_size((248, 373)) == (248, 373)
    assert metric_size((512, 512)) == (512, 512)
    assert max(metric_size((1100, 1600))) == METRIC_SIDE


def test_a_mask_read_at_the_metric_size_warns_only_when_it_does_not_fit_its_image(tmp_path: Path) -> None:
    mask = np.zeros((800, 1600), np.uint8)
    mask[100:300, 400:900] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error", MaskSizeWarning)
        small = read_mask(tmp_path / "m.png", (800, 1600), (256, 512))
    assert small.shape == (256, 512) and small.dtype == bool
    assert abs(int(small.sum()) - 200 * 500 / 3.125**2) < 300  # the same region, shrunk
    with pytest.warns(MaskSizeWarning):
        read_mask(tmp_path / "m.png", (400, 800), (256, 512))
    assert read_mask(None, (800, 1600), (256, 512)).shape == (256, 512)


def _highres_case(tmp_path: Path, n: int, seed: int = 0) -> tuple[list[Sample], Result]:
    """n scored 1600x800 images, half with a defect mask, and maps that are hotter on the defect."""
    rng = np.random.default_rng(seed)
    samples, grids = [], []
    for i in range(n):
        g = rng.random((20, 40)).astype(np.float32)
        if i % 2:
            r, c = rng.integers(2, 14), rng.integers(2, 30)
            mask = np.zeros((800, 1600), np.uint8)
            mask[r * 40 : r * 40 + 160, c * 40 : c * 40 + 320] = 255
            g[r : r + 4, c : c + 8] += 0.7
            Image.fromarray(mask).save(tmp_path / f"{i}_mask.png")
            samples.append(Sample(tmp_path / f"{i}.png", 1, "defect", tmp_path / f"{i}_mask.png"))
        else:
            samples.append(Sample(tmp_path / f"{i}.png", 0, "good", None))
        grids.append(g)
    scores = np.array([g.max() for g in grids], np.float64)
    result = Result(paths=[s.path for s in samples], scores=scores, maps=Maps(grids, [(800, 1600)] * n),
                    decisions=scores > 1, threshold=1.0)
    return samples, result


def test_pixel_metrics_at_the_capped_side_match_full_resolution(tmp_path: Path) -> None:
    samples, result = _highres_case(tmp_path, 6)
    full = pixel_metrics(masks_for(samples, result), list(result.maps))
    masks, maps = pixel_inputs(samples, result)
    assert isinstance(maps, Maps) and all(m.shape == (256, 512) for m in masks)
    capped = pixel_metrics(masks, maps)
    assert capped["pixel_auroc"] == pytest.approx(full["pixel_auroc"], abs=2e-3)
    assert capped["aupro"] == pytest.approx(full["aupro"], abs=5e-3)
    # Full-size maps in a plain list (MuSc's kind) are shrunk to the same size and give the same numbers.
    plain = Result(result.paths, result.scores, list(result.maps), result.decisions, result.threshold)
    masks2, maps2 = pixel_inputs(samples, plain)
    assert pixel_metrics(masks2, maps2) == pytest.approx(capped, abs=2e-3)


def test_a_mask_that_cannot_be_read_costs_its_image_not_the_evaluation(tmp_path: Path, caplog) -> None:
    """eval read every mask after minutes of fitting and scoring, and one unreadable mask ended it with
    nothing printed: now that image is left out of the pixel metrics, named on the log."""
    samples, result = _highres_case(tmp_path, 4)
    bad = samples[1].mask_path
    bad.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        masks = masks_for(samples, result)
    assert masks[1] is None and masks[3] is not None and masks[3].any()
    assert f"{bad}: not an image" in caplog.text and "left out of the pixel metrics" in caplog.text


def test_a_test_set_of_one_class_says_why_its_image_metrics_are_null(synthetic_dataset: Path, caplog) -> None:
    """Without test/good, eval printed null image metrics without a word, and NaN (not JSON) for the false-
    positive rate at the threshold."""
    import json
    import shutil

    from normalcy.evaluation.evaluate import run_eval

    shutil.rmtree(synthetic_dataset / "test" / "good")
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        metrics, _, _ = run_eval(synthetic_dataset, extractor=FeatureExtractor(image_size=64), progress=False,
                                 latency_images=0)
    assert metrics["image_auroc"] is None and metrics["test_fpr_at_threshold"] is None
    json.dumps(metrics, allow_nan=False)
    assert "no good image (test/good) was scored: image AUROC, AP and F1 need both kinds" in caplog.text


def test_a_test_set_none_of_whose_images_can_be_read_is_an_error(synthetic_dataset: Path) -> None:
    """With every test image unreadable, eval printed all metrics null and exited 0, after the fit: a script
    took that for a result."""
    from normalcy.errors import InputError
    from normalcy.evaluation.evaluate import run_eval

    for p in (synthetic_dataset / "test").glob("*/*.png"):
        p.write_bytes(b"not an image")
    with pytest.raises(InputError, match=r"test: none of its 8 test image\(s\) could be read \(e\.g\. .*: not an image"):
        run_eval(synthetic_dataset, extractor=FeatureExtractor(image_size=64), progress=False, latency_images=0)


def test_an_empty_mask_of_a_defective_image_is_named(tmp_path: Path, caplog) -> None:
    """An all-zero mask for a defective image (a wrong file, a failed export) counted its pixels as normal
    without a word."""
    samples, result = _highres_case(tmp_path, 4)
    Image.new("L", (1600, 800), 0).save(samples[1].mask_path)
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        masks = masks_for(samples, result)
    assert masks[1] is not None and not masks[1].any() and masks[3].any()
    assert caplog.text.count("no defect pixel") == 1
    assert f"{samples[1].mask_path}: no defect pixel in the mask of a defective image" in caplog.text


def test_an_all_white_mask_of_a_defective_image_is_named(tmp_path: Path, caplog) -> None:
    """A mask saved inverted (defect dark on white) reads as defect in every pixel: it counted its whole image as
    defective in the pixel metrics without a word. Named now, one line for all such masks; the masks unchanged."""
    samples, result = _highres_case(tmp_path, 6)
    for i in (1, 3):
        Image.new("L", (1600, 800), 255).save(samples[i].mask_path)
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        masks = masks_for(samples, result)
    assert masks[1].all() and masks[3].all() and not masks[5].all()
    assert caplog.text.count("every pixel of the mask") == 1
    assert f"{samples[1].mask_path}: every pixel of the mask of a defective image is defect" in caplog.text
    assert "(and 1 more mask(s) likewise: 3_mask.png)" in caplog.text


def test_null_pixel_metrics_for_want_of_masks_are_explained(caplog, tmp_path: Path) -> None:
    """Defective images without any mask gave null pixel AUROC and AUPRO, said only at INFO per folder; a test
    set of good images alone said why its image metrics were null, not its pixel ones. A warning where a
    ground_truth folder is there; INFO where the data set has none (labelled by image alone, as the demo's)."""
    from normalcy.evaluation.evaluate import warn_no_masks, warn_one_class

    labels = np.array([0, 1, 1])
    (tmp_path / "ground_truth").mkdir()
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        warn_no_masks(labels, [np.zeros((4, 4), bool), None, None], tmp_path / "test")
    assert f"{tmp_path / 'test'}: none of its 2 defective image(s) has a mask that could be read" in caplog.text
    assert "pixel AUROC and AUPRO are null" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="normalcy"):
        warn_no_masks(labels, [np.zeros((4, 4), bool), None, None], Path("ds/test"))
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "ds/test: none of its 2 defective image(s) has a mask" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        warn_no_masks(labels, [np.zeros((4, 4), bool), None, np.ones((4, 4), bool)], Path("ds/test"))
        warn_no_masks(np.array([0, 0]), [np.zeros((4, 4), bool)] * 2, Path("ds/test"))
    assert caplog.text == ""
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        warn_one_class(np.array([0, 0]), Path("ds/test"))
    assert "image AUROC, AP and F1 need both kinds and are null, and so are pixel AUROC and AUPRO" in caplog.text


def test_a_mask_that_gives_no_defect_pixel_says_why(tmp_path: Path, caplog) -> None:
    """A mask of 0 and 100 (class numbers), or a one-pixel defect in a 1600x800 mask read at the pixel metrics'
    512x256, gave "no defect pixel in the mask" of a file that has one: the warning says why now."""
    samples, result = _highres_case(tmp_path, 4)
    dim = np.zeros((800, 1600), np.uint8)
    dim[100:300, 100:400] = 100
    Image.fromarray(dim).save(samples[1].mask_path)
    dot = np.zeros((800, 1600), np.uint8)
    dot[400, 800] = 255
    Image.fromarray(dot).save(samples[3].mask_path)
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        masks = pixel_inputs(samples, result)[0]
    assert not masks[1].any() and not masks[3].any()
    assert f"{samples[1].mask_path}: no defect pixel in the mask of a defective image: its brightest pixel is 100 " \
        "of 255, and a defect pixel is one above 127 (or 1 in a 0/1 mask); its pixels count as normal" in caplog.text
    assert f"{samples[3].mask_path}: no defect pixel in the mask of a defective image at the pixel metrics' size " \
        "512x256 (its defect covers under half a pixel there); its pixels count" in caplog.text


def test_masks_of_another_size_or_without_defect_are_one_line_a_kind(tmp_path: Path, caplog) -> None:
    """Masks all saved at half their images' size (or all black) gave one warning a defective image: a data set of
    1,000 gave 1,000 lines. One line a kind names the first and counts and names the others."""
    samples, result = _highres_case(tmp_path, 16)
    defective = [s for s in samples if s.label]
    for s in defective[:6]:
        Image.open(s.mask_path).resize((800, 400)).save(s.mask_path)
    for s in defective[6:]:
        Image.new("L", (1600, 800), 0).save(s.mask_path)
    with caplog.at_level(logging.WARNING, logger="normalcy"), pytest.warns(MaskSizeWarning) as caught:
        masks = masks_for(samples, result)
    assert [m.any() for m, s in zip(masks, samples) if s.label] == [True] * 6 + [False] * 2
    assert [str(w.message) for w in caught] == [
        (f"{defective[0].mask_path}: mask size 800x400 differs from image size 1600x800; resized (and 5 more mask(s) "
         "of another size than their image's, resized: 3_mask.png, 5_mask.png, 7_mask.png, ...)")]
    assert [r.getMessage() for r in caplog.records] == [
        (f"{defective[6].mask_path}: no defect pixel in the mask of a defective image; its pixels count as normal in "
         "the pixel metrics (and 1 more mask(s) likewise: 15_mask.png)")]


def test_test_images_that_are_training_images_are_named(synthetic_dataset: Path, caplog) -> None:
    """Copies of test images left in train/good are fitted on as normal and score low: hazelnut_toy with five
    defective test images copied in gave image AUROC 0.686 (1.0 without), without a word."""
    import shutil

    from normalcy.evaluation.evaluate import training_copies, warn_training_copies
    from normalcy.images.io import load_dataset

    test = synthetic_dataset / "test"
    shutil.copy(test / "defect" / "001.png", synthetic_dataset / "train" / "good" / "copy of 001.png")
    shutil.copy(test / "good" / "002.png", synthetic_dataset / "train" / "good" / "x.png")
    ds = load_dataset(synthetic_dataset)
    assert training_copies(ds) == [test / "defect" / "001.png", test / "good" / "002.png"]
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        warn_training_copies(ds)
    assert f"{synthetic_dataset}: 2 test image(s) are copies of training images (e.g. {test / 'defect' / '001.png'})" \
        in caplog.text
    (synthetic_dataset / "train" / "good" / "x.png").unlink()
    (synthetic_dataset / "train" / "good" / "copy of 001.png").unlink()
    assert training_copies(load_dataset(synthetic_dataset)) == []


def test_test_images_of_one_size_are_not_read_whole_to_find_copies(synthetic_dataset: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Uncompressed images of one camera are all of one size: every training and test image was read whole
    (a first pass over the data set) to look for copies. Only files whose first 64 kB agree are."""
    import shutil

    import normalcy.evaluation.evaluate as evaluation
    from normalcy.images.io import load_dataset

    for folder in ("train/good", "test/good", "test/defect"):
        for p in sorted((synthetic_dataset / folder).glob("*.png")):
            Image.open(p).save(p.with_suffix(".bmp"))
            p.unlink()
    shutil.copy(synthetic_dataset / "test" / "good" / "001.bmp", synthetic_dataset / "train" / "good" / "x.bmp")
    read: list[Path] = []
    digest = evaluation.sha256_file
    monkeypatch.setattr(evaluation, "sha256_file", lambda p: read.append(p) or digest(p))
    ds = load_dataset(synthetic_dataset)
    assert evaluation.training_copies(ds) == [synthetic_dataset / "test" / "good" / "001.bmp"]
    assert sorted(p.name for p in read) == ["001.bmp", "x.bmp"]


def test_an_unreadable_test_image_is_named_once_and_not_timed(synthetic_dataset: Path, caplog) -> None:
    """The batch-1 latency scored the test paths again, unreadable ones included: each was skipped and
    named a second time, and its quick failure was timed as a latency."""
    from normalcy.evaluation.evaluate import run_eval

    bad = synthetic_dataset / "test" / "defect" / "000.png"
    bad.write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        metrics, _, _ = run_eval(synthetic_dataset, extractor=FeatureExtractor(image_size=64), progress=False,
                                 latency_images=2)
    assert caplog.text.count(f"skipping {bad}") == 1
    assert metrics["skipped"] == [[str(bad), "not an image (cannot identify format)"]]
    assert metrics["n_test"] == 7 and metrics["latency_ms_batch1"] > 0


def test_an_eval_report_leaves_out_a_top_image_gone_since_scoring(synthetic_dataset: Path, tmp_path: Path,
                                                                  caplog) -> None:
    """The report reads its top images again: one moved or changed since it was scored (minutes, on a share)
    ended the evaluation with its metrics unprinted."""
    from types import SimpleNamespace

    from normalcy.evaluation.evaluate import write_eval_report
    from normalcy.images.io import load_dataset

    ds = load_dataset(synthetic_dataset)
    paths = [s.path for s in ds.test]
    scores = np.arange(len(paths), dtype=float)
    result = Result(paths, scores, [np.zeros((96, 96), np.float32)] * len(paths), scores >= 4, 4.0)
    extractor = SimpleNamespace(size=(64, 64), spec=SimpleNamespace(name="bb"), input_norm="own")
    model = SimpleNamespace(threshold_=4.0, map_range_=(0.0, 1.0), name="gaussian", extractor=extractor)
    paths[-1].write_bytes(b"")  # the top-scored image, emptied since
    metrics = {"detector": "gaussian", "dataset": ds.name, "image_auroc": 1.0}
    with caplog.at_level(logging.WARNING, logger="normalcy"):
        report = write_eval_report(tmp_path / "r.html", metrics, model, result, ds)
    text = report.read_text()
    assert f"skipping {paths[-1]}: empty file (0 bytes)" in caplog.text
    shown = [f'title="{p.relative_to(ds.root)}"' in text for p in paths[-2:]]
    assert shown == [True, False]


def test_predict_holds_no_earlier_batchs_images_while_it_reads_the_next(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """predict held the images of the batch it had written (and the last one's full-size map) while it read the
    next batch: two batches of originals at once (2 x 400 MB of large photos). Each is let go first now."""
    import weakref

    from normalcy import api
    from normalcy.images import features

    det, paths = _noise_fitted(tmp_path, (48, 48))
    monkeypatch.setattr(features, "MAX_KEPT_PIXELS", 1)  # one image a batch
    alive: list[weakref.ref] = []
    held: list[int] = []
    read = features.iter_images

    def counted(files, skipped, listed=True):
        held.append(sum(r() is not None for r in alive))
        for p, im in read(files, skipped, listed):
            alive.append(weakref.ref(im))
            yield p, im

    monkeypatch.setattr(features, "iter_images", counted)
    api.predict(det, [tmp_path / f"{i}.png" for i in range(6, 9)], tmp_path / "run", report=False, progress=False)
    assert held == [0, 0, 0]



@pytest.fixture(scope="module")
def fitted_and_test(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """A gaussian fitted on 6 noise images, and 3 test images, the highest-scoring first."""
    folder = tmp_path_factory.mktemp("lazy")
    det, paths = _noise_fitted(folder, (48, 56))
    res = det.score(paths[6:], progress=False)
    order = np.argsort(-res.scores, kind="stable")
    return det, [res.paths[i] for i in order], [res.maps.grids[i] for i in order]


@pytest.mark.parametrize("flags, drawn", [
    ({"heatmaps": False, "report": False}, 0),  # scores only: no map is drawn at the image's size
    ({"heatmaps": False, "report": True, "top": 1}, 1),  # a card for the top image only (the first scored)
    ({"heatmaps": False, "report": False, "save_maps": True}, 3),
    ({"heatmaps": True, "report": False}, 3),
])
def test_predict_draws_a_full_size_map_only_where_the_run_uses_it(tmp_path: Path, map_draws: list,
                                                                   fitted_and_test: tuple, flags: dict,
                                                                   drawn: int) -> None:
    """predict drew every image's map at the image's full size (144 MB and a second for a 6000x6000 photo), even
    with --no-heatmaps --no-report, where nothing reads it. It is drawn now only for a picture, a map file or a
    report card, and what is written is as it was."""
    from normalcy import api

    det, test, grids = fitted_and_test
    calls = map_draws
    api.predict(det, test, tmp_path / "run", progress=False, **flags)
    assert calls == [(48, 56)] * drawn
    if flags.get("save_maps"):
        for p, grid in zip(test, grids):
            saved = np.load(tmp_path / "run" / "maps" / f"{p.stem}.npy")
            np.testing.assert_array_equal(saved, upsample_map(grid, (48, 56)))


def test_pixel_metrics_shrink_a_shrink_maps_full_size_maps_as_a_list_of_them() -> None:
    """MuSc's maps (``Maps(shrink=True)``, held at the patch grid) reach the pixel metrics as its list of full-size
    maps did: each drawn at its image's size, then shrunk by area averaging to the capped side."""
    from normalcy.evaluation.evaluate import maps_at

    grids, sizes = [_grid(0), _grid(1, 6, 6)], [(800, 1600), (37, 53)]
    small = [metric_size(s) for s in sizes]
    lazy, full = maps_at(Maps(grids, sizes, shrink=True), small), maps_at(list(Maps(grids, sizes)), small)
    assert len(lazy) == 2 and all(np.array_equal(a, b) for a, b in zip(lazy, full))
    assert not np.array_equal(maps_at(Maps(grids, sizes), small)[0], full[0])  # drawn at the capped side directly


def test_eval_turns_a_mask_drawn_on_its_exif_turned_images_stored_pixels(tmp_path: Path) -> None:
    """eval read each mask against its image's size alone: a portrait phone photo's mask at the photo's stored
    size was stretched, its defect out of place. masks_for hands the image over; one warning for them all."""
    exif = Image.Exif()
    exif[0x0112] = 8
    stored = np.zeros((10, 20), np.uint8)
    stored[:3, :5] = 255
    samples = []
    for i in range(3):
        Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(tmp_path / f"{i}.jpg", exif=exif.tobytes())
        Image.fromarray(stored).save(tmp_path / f"{i}_mask.png")
        samples.append(Sample(tmp_path / f"{i}.jpg", 1, "bad", tmp_path / f"{i}_mask.png"))
    maps = [np.zeros((20, 10), np.float32)] * 3
    result = Result([s.path for s in samples], np.zeros(3), maps, np.zeros(3, bool), 1.0)
    with pytest.warns(MaskTurnedWarning) as caught:
        masks = masks_for(samples, result)
    assert all(np.array_equal(m, np.rot90(stored, 1) > 127) for m in masks)
    assert [str(w.message) for w in caught] == [
        f"{tmp_path / '0_mask.png'}: mask size 20x10 is its image's size before the image's EXIF orientation (8) "
        "turns it to 10x20; turned as the image is (and 2 more mask(s) turned likewise: 1_mask.png, 2_mask.png)"]
