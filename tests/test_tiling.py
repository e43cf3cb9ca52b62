"""Tiling (--tile/--overlap): high-resolution inputs cut into overlapping tiles, features blended back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from normalcy.detectors import DRAEM, GaussianAD, load
from normalcy.errors import InputError, cli_wording
from normalcy.images.features import FeatureExtractor, tile_starts
from normalcy.images.io import load_dataset


def _jumps(f: torch.Tensor, axis: int) -> torch.Tensor:
    """Mean feature-vector change between neighbouring cells across each row (axis 2) or column (axis 3) boundary."""
    d = f.diff(dim=axis).norm(dim=1)
    return d.mean((0, 2)) if axis == 2 else d.mean((0, 1))


def _photo(h: int, w: int) -> torch.Tensor:
    """A smooth, structured test image (gradients and blobs), 1 x 3 x h x w in [0, 1]."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([np.sin(9 * x + 3 * y), np.cos(7 * y - 2 * x), np.sin(5 * x * y * 6)], 0) * 0.4 + 0.5
    return torch.from_numpy(img[None]).float()


def test_tile_starts_cover_the_side_and_end_flush() -> None:
    assert tile_starts(200, 256, 64) == [0]
    assert tile_starts(512, 256, 64) == [0, 192, 256]
    starts = tile_starts(1600, 256, 64)
    assert starts[0] == 0 and starts[-1] == 1600 - 256
    assert all(b - a <= 256 - 64 for a, b in zip(starts, starts[1:]))  # every neighbour overlaps >= 64 px


def _seam_ratio(f: torch.Tensor, width: int, tile: int, overlap: int, stride: int) -> float:
    """Mean feature change across the columns where a tile's contribution begins or ends, over the mean
    change across every column: about 1 where there is no seam."""
    starts = tile_starts(width, tile, overlap)
    cuts = {(st + tile) // stride for st in starts[:-1]} | {st // stride for st in starts[1:]}
    cols = _jumps(f, 3)
    return float(cols[[c - 1 for c in sorted(cuts) if 0 < c <= len(cols)]].mean() / cols.mean())


def test_tiled_features_have_no_seams() -> None:
    """Across tile borders the blended features change about as much as anywhere else (abutting tiles
    without overlap show the seam the check looks for); with a 64 px overlap the stride-8 level is within
    2 % of the untiled one (its receptive field barely reaches past the overlap)."""
    size, tile = (512, 768), 256
    x = _photo(*size)
    a = FeatureExtractor(image_size=size, precision="fp32").level_maps(x, ["s8", "s16", "s32"])
    blended = FeatureExtractor(image_size=size, precision="fp32", tile=tile, overlap=64)
    b = blended.level_maps(x, ["s8", "s16", "s32"])
    assert all(a[lv].shape == b[lv].shape for lv in a)
    assert float((a["s8"] - b["s8"]).norm() / a["s8"].norm()) < 0.02
    for lv, s in (("s16", 16), ("s32", 32)):
        assert _seam_ratio(b[lv], size[1], tile, 64, s) < 1.2, lv
    abutting = FeatureExtractor(image_size=size, precision="fp32", tile=tile, overlap=0)
    c = abutting.level_maps(x, ["s16"])["s16"]
    assert _seam_ratio(c, size[1], tile, 0, 16) > 1.5


def test_tiled_gaussian_fits_scores_and_round_trips(tmp_path, hazelnut) -> None:
    ds = load_dataset(hazelnut)
    ex = FeatureExtractor(image_size=384, tile=256, overlap=64, precision="fp32")
    det = GaussianAD(ex).fit(ds.train[:8], progress=False)
    res = det.score([s.path for s in ds.test[:3]], progress=False)
    assert res.maps.grids[0].shape == (48, 48)  # the whole 384 px input at stride 8, not one tile's 32 x 32
    det.save(tmp_path / "m")
    again = load(tmp_path / "m")
    assert again.extractor.tile == 256 and again.extractor.overlap == 64
    np.testing.assert_allclose(again.score([s.path for s in ds.test[:3]], progress=False).scores, res.scores,
                               rtol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"image_size": 512, "tile": 250}, "multiple of 32"),
    ({"image_size": 512, "tile": 256, "overlap": 256}, "below the tile size"),
    ({"image_size": 500, "tile": 256}, "set image_size, e.g. 512x512"),
    ({"image_size": 512, "tile": 64}, "unless given: with tile=64 give e.g. overlap=32"),  # the default 64
])
def test_bad_tiling_is_named(kwargs, message) -> None:
    with pytest.raises(InputError, match=message):
        FeatureExtractor(**kwargs)


def test_bad_tiling_names_the_options_on_the_command_line() -> None:
    """Python is told its arguments (above); the command line its options, as typed."""
    with cli_wording():
        with pytest.raises(InputError, match="unless given: with --tile 64 give e.g. --overlap 32"):
            FeatureExtractor(image_size=512, tile=64)
        with pytest.raises(InputError, match=r"set --image-size, e\.g\. 512x512"):
            FeatureExtractor(image_size=500, tile=256)
        with pytest.raises(InputError, match=r"tiling \(--tile\) is for gaussian"):
            DRAEM(FeatureExtractor(image_size=512, tile=256))


def test_detectors_without_features_refuse_tiles() -> None:
    with pytest.raises(InputError, match=r"tiling \(tile\) is for gaussian"):  # Python's argument
        DRAEM(FeatureExtractor(image_size=512, tile=256))


def test_tiled_model_exports_with_the_same_scores(tmp_path, hazelnut) -> None:
    pytest.importorskip("onnxruntime", reason="the export extra")
    from normalcy.scale.export import OnnxScorer, export_onnx

    ds = load_dataset(hazelnut)
    ex = FeatureExtractor(image_size=192, tile=128, overlap=64, precision="fp32", pooled_levels=("s8", "s16"))
    det = GaussianAD(ex).fit(ds.train[:6], progress=False)  # 2 x 2 tiles of 128 px
    paths = [s.path for s in ds.test[:4]]
    got = OnnxScorer(export_onnx(det, tmp_path / "tiled.onnx")).score(paths, batch_size=3)  # batches of 3 and 1
    ref = det.score(paths, progress=False)
    np.testing.assert_allclose(got.scores, ref.scores, rtol=1e-4)
    assert np.array_equal(got.decisions, ref.decisions) and got.maps.grids[0].shape == (24, 24)
