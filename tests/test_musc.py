"""MuSc: zero-shot mutual scoring of an unlabeled batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import texture
from PIL import Image

from normalcy.detectors import MuSc
from normalcy.errors import InputError
from normalcy.images.features import FeatureExtractor


def _batch(folder: Path, n: int = 10) -> list[Path]:
    rng = np.random.default_rng(0)
    folder.mkdir()
    paths = []
    for i in range(n):
        img = texture(rng)
        if i == 6:  # the one planted defect
            img[30:54, 40:64] = (250, 30, 30)
        p = folder / f"{i:02d}.png"
        Image.fromarray(img).save(p)
        paths.append(p)
    return paths


def test_planted_defect_ranks_first_with_no_training(tmp_path: Path) -> None:
    paths = _batch(tmp_path / "batch")
    det = MuSc(FeatureExtractor(image_size=96, precision="fp32"))
    r = det.score(paths, progress=False)
    assert r.paths[int(np.argmax(r.scores))].name == "06.png"
    assert all(m.shape == (96, 96) for m in r.maps)
    hot = r.maps[6]
    assert hot[30:54, 40:64].mean() > hot[:, :20].mean()


def test_chunked_and_unchunked_scoring_agree() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(9, 16, 8, generator=g), dim=-1)
    det = MuSc()
    whole = det.mutual_scores(z, chunk=9)
    for chunk in (1, 2, 4):
        torch.testing.assert_close(det.mutual_scores(z, chunk=chunk), whole, rtol=1e-5, atol=1e-5)


def test_needs_two_images_and_skips_bad_files(tmp_path: Path) -> None:
    paths = _batch(tmp_path / "batch", n=3)
    (tmp_path / "batch" / "bad.png").write_bytes(b"")
    det = MuSc(FeatureExtractor(image_size=64, precision="fp32"))
    r = det.score([*paths, tmp_path / "batch" / "bad.png"], progress=False)
    assert len(r.scores) == 3 and [p.name for p, _ in r.skipped] == ["bad.png"]
    with pytest.raises(InputError):
        det.score(paths[:1], progress=False)


def test_a_batch_too_small_to_flag_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With 2 images (or 1 and references) neither can stand out (each is one MAD from the median): every one was
    called normal without a word; the decisions are the same, said."""
    paths = _batch(tmp_path / "batch", n=3)
    det = MuSc(FeatureExtractor(image_size=64, precision="fp32"))
    with caplog.at_level("WARNING", logger="normalcy"):
        r = det.score(paths[:2], progress=False)
    assert not r.decisions.any() and "2 image(s) scored" in caplog.text and "none is flagged" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="normalcy"):
        det.score(paths, progress=False)
    assert "none is flagged" not in caplog.text


def _naive_mutual(z: torch.Tensor, refs: torch.Tensor | None, interval: float) -> torch.Tensor:
    """The definition, one image pair at a time."""
    pool = z if refs is None else torch.cat([z, refs])
    out = torch.empty(z.shape[:2])
    for i in range(len(z)):
        per_image = []
        for j in range(len(pool)):
            if j != i:
                d = torch.cdist(z[i], pool[j])  # P x P euclidean on unit vectors
                per_image.append(d.min(1).values)
        dist = torch.stack(per_image, 1).sort(1).values
        keep = max(1, int(round(interval * dist.shape[1])))
        out[i] = dist[:, :keep].mean(1)
    return out


def test_one_path_is_a_folder(tmp_path: Path) -> None:
    """``MuSc().score("batch/")`` read the string one character per file; one path is a folder's images."""
    _batch(tmp_path / "batch", n=3)
    r = MuSc(FeatureExtractor(image_size=64, precision="fp32")).score(str(tmp_path / "batch"), progress=False)
    assert [p.name for p in r.paths] == ["00.png", "01.png", "02.png"] and not r.skipped


def test_mutual_scores_match_the_definition_with_and_without_references() -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.nn.functional.normalize(torch.randn(7, 12, 6, generator=g), dim=-1)
    refs = torch.nn.functional.normalize(torch.randn(5, 12, 6, generator=g), dim=-1)
    det = MuSc(interval=0.3)
    torch.testing.assert_close(det.mutual_scores(z, chunk=3), _naive_mutual(z, None, 0.3), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(det.mutual_scores(z, chunk=2, refs=refs), _naive_mutual(z, refs, 0.3),
                               rtol=1e-4, atol=1e-4)


def test_extra_unlabeled_references_are_matched_not_scored(tmp_path: Path) -> None:
    paths = _batch(tmp_path / "batch")
    det = MuSc(FeatureExtractor(image_size=96, precision="fp32")).references(paths[:5], progress=False)
    assert len(det.refs_[0]) == 5
    r = det.score(paths[5:], progress=False)  # 5 images scored, each against 4 others + 5 references
    assert [p.name for p in r.paths] == [p.name for p in paths[5:]]
    assert r.paths[int(np.argmax(r.scores))].name == "06.png"
    one = det.score(paths[6:7], progress=False)  # one image is enough when there are references
    assert len(one.scores) == 1


def test_musc_is_not_a_fitted_detector(tmp_path: Path) -> None:
    """Zero-shot MuSc has no model: create/fit refuse it and point at score-batch."""
    from normalcy.detectors import DETECTORS, create

    assert "musc" not in DETECTORS
    with pytest.raises(InputError, match="score-batch"):
        create("musc")


def test_score_is_patch_scores_then_image_scores(tmp_path: Path) -> None:
    """The public steps the benchmarks call compose to exactly what ``score`` returns."""
    paths = _batch(tmp_path / "batch")
    for kwargs in ({}, {"image_score": "max", "rscin_k": 1}):
        det = MuSc(FeatureExtractor(image_size=96, precision="fp32"), **kwargs)
        r = det.score(paths, progress=False)
        per_r, img, seen, skipped = det.features(paths, progress=False)
        assert seen == r.paths and not skipped
        np.testing.assert_allclose(det.image_scores(det.patch_scores(per_r), img), r.scores, rtol=1e-6)
        assert r.paths[int(np.argmax(r.scores))].name == "06.png"


def test_bad_settings_are_refused_by_name() -> None:
    with pytest.raises(InputError, match="image_score"):
        MuSc(image_score="mean")
    with pytest.raises(InputError, match="rscin_k"):
        MuSc(rscin_k=0)
    with pytest.raises(InputError, match="radii"):
        MuSc(radii=[0])


def test_learned_attributes_appear_when_learned(tmp_path: Path) -> None:
    """MuSc set ``refs_``, ``skipped_refs_``, ``threshold_`` and ``map_range_`` in ``__init__``: ``hasattr`` took a
    MuSc that had scored nothing for one that had (the contract the other detectors follow since the estimators
    round). They appear at ``references`` and ``score``, and the scores are those of a MuSc given no references."""
    paths = _batch(tmp_path / "batch", n=4)
    fresh = MuSc(FeatureExtractor(image_size=64, precision="fp32"))
    assert not [a for a in vars(fresh) if a.endswith("_") and not a.startswith("_")]
    r = fresh.score(paths, progress=False)
    assert np.isfinite(fresh.threshold_) and fresh.map_range_ is not None and not hasattr(fresh, "refs_")
    no_refs = MuSc(fresh.extractor).references([], progress=False)
    assert no_refs.refs_ == [] and no_refs.skipped_refs_ == []
    np.testing.assert_array_equal(no_refs.score(paths, progress=False).scores, r.scores)


def test_score_holds_patch_grids_and_score_batch_draws_no_map_it_does_not_write(tmp_path: Path,
                                                                                map_draws: list) -> None:
    """MuSc held every image's map at the image's full size for the whole batch, and score-batch drew them even
    with --no-heatmaps --no-report. Its maps are held at the patch grid now, drawn when read, as they were."""
    from normalcy import api
    from normalcy.detectors.base import Maps
    from normalcy.images import features

    paths = _batch(tmp_path / "batch", n=3)
    r = MuSc(FeatureExtractor(image_size=64, precision="fp32")).score(paths, progress=False)
    assert isinstance(r.maps, Maps) and r.maps.shrink and all(max(g.shape) < 96 for g in r.maps.grids)
    np.testing.assert_array_equal(r.maps[1], features.upsample_map(r.maps.grids[1], (96, 96)))
    calls = map_draws
    calls.clear()  # the two maps drawn above
    api.score_batch(paths, tmp_path / "run", heatmaps=False, report=False, progress=False, image_size="64",
                    precision="fp32")
    assert calls == []
    api.score_batch(paths, tmp_path / "run", heatmaps=False, report=False, save_maps=True, progress=False,
                    image_size="64", precision="fp32")
    assert calls == [(96, 96)] * 3
    np.testing.assert_array_equal(np.load(tmp_path / "run" / "maps" / "01.npy"), r.maps[1])
