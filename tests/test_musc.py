"""MuSc: zero-shot mutual scoring of an unlabeled batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import texture
from normalcy.data import InputError
from normalcy.detectors import create
from normalcy.features import FeatureExtractor


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
    det = create("musc", FeatureExtractor(image_size=96, precision="fp32")).fit()
    r = det.score(paths, progress=False)
    assert r.paths[int(np.argmax(r.scores))].name == "06.png"
    assert all(m.shape == (96, 96) for m in r.maps)
    hot = r.maps[6]
    assert hot[30:54, 40:64].mean() > hot[:, :20].mean()


def test_chunked_and_unchunked_scoring_agree() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(9, 16, 8, generator=g), dim=-1)
    det = create("musc")
    whole = det.mutual_scores(z, chunk=9)
    for chunk in (1, 2, 4):
        torch.testing.assert_close(det.mutual_scores(z, chunk=chunk), whole, rtol=1e-5, atol=1e-5)


def test_needs_two_images_and_skips_bad_files(tmp_path: Path) -> None:
    paths = _batch(tmp_path / "batch", n=3)
    (tmp_path / "batch" / "bad.png").write_bytes(b"")
    det = create("musc", FeatureExtractor(image_size=64, precision="fp32")).fit()
    r = det.score([*paths, tmp_path / "batch" / "bad.png"], progress=False)
    assert len(r.scores) == 3 and [p.name for p, _ in r.skipped] == ["bad.png"]
    with pytest.raises(InputError):
        det.score(paths[:1], progress=False)
