"""PatchCore past its RAM budget: the bank kept as IVF-PQ codes (issue 12).

hazelnut_toy's 10 % bank is 2,195 patches x 152 = 1.3 MB of float32; ``max_memory_mb=0.05`` forces IVF-PQ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from normalcy.detectors import PatchCore, create, load
from normalcy.detectors.modelfile import MODEL_TENSORS
from normalcy.errors import InputError
from normalcy.evaluation.evaluate import pixel_inputs
from normalcy.evaluation.metrics import evaluate
from normalcy.images.features import Batch, FeatureExtractor, Features
from normalcy.images.io import load_dataset

TINY_BUDGET = 0.05  # MB


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    return FeatureExtractor()  # shared: its backbone is traced once


@pytest.fixture(scope="module")
def fitted(hazelnut: Path, extractor: FeatureExtractor) -> dict:
    """An exact (default budget) and an IVF-PQ PatchCore on hazelnut_toy, and their test results (one batch)."""
    ds = load_dataset(hazelnut)
    paths = [s.path for s in ds.test]
    out: dict = {"ds": ds, "paths": paths}
    for name, budget in (("exact", 1024.0), ("pq", TINY_BUDGET)):
        det = create("patchcore", extractor, max_memory_mb=budget, batch_size=32).fit(ds.train, progress=False)
        out[name] = det, det.score(paths, progress=False)
    return out


def _is_pq(det: PatchCore) -> bool:
    return type(det._index).__name__ == "IndexIVFPQ"


def test_pq_only_past_the_budget(fitted) -> None:
    exact, _ = fitted["exact"]
    pq, _ = fitted["pq"]
    assert not _is_pq(exact) and exact.codes_.size == 0 and len(exact.bank_) == 2195
    assert exact.bank_.nbytes > TINY_BUDGET * 2**20
    assert _is_pq(pq)
    # The float rows are gone; 2,195 codes of 1 cell byte + 38 x 4 bits remain, with the codebook and cells.
    assert pq.bank_.shape == (0, 152) and pq.codes_.shape == (2195, 20) and pq.codes_.dtype == np.uint8
    assert pq.codebook_.shape == (38, 16, 4) and len(pq.cells_) == 56
    assert pq.bank_knn_.shape == (2195, 9) and (pq.bank_knn_[:, 0] == np.arange(2195)).all()  # m* first
    saved = sum(t.numel() * t.element_size() for t in pq.state_dict().values())
    assert saved < exact.bank_.nbytes / 4


def _fit_on_random_patches(extractor: FeatureExtractor, budget: float, **params) -> PatchCore:
    """PatchCore fitted on 6 "images" of 8x8 random 16-d patches (no backbone): 384 bank rows, 24 kB, at ratio 1."""
    g = torch.Generator().manual_seed(0)
    batches = [Batch([Path(f"{i}.png")], [], Features(torch.randn(1, 16, 8, 8, generator=g), {})) for i in range(6)]
    det = PatchCore(extractor, max_memory_mb=budget, **params)
    det._fit(iter(batches), [], False)
    return det


def test_budget_boundary_and_small_banks(extractor: FeatureExtractor) -> None:
    """PQ when the float32 bank exceeds the budget, not when it equals it; never for a bank under 256 rows."""
    whole = 384 * 16 * 4 / 2**20  # MB
    at = _fit_on_random_patches(extractor, whole, coreset_ratio=1.0)
    assert at.bank_.shape == (384, 16) and at.codes_.size == 0
    past = _fit_on_random_patches(extractor, whole * 383 / 384, coreset_ratio=1.0)
    assert past.bank_.shape == (0, 16) and len(past.codes_) == 384 and _is_pq(past)
    small = _fit_on_random_patches(extractor, 1e-6, coreset_ratio=0.5)  # 192 rows
    assert small.bank_.shape == (192, 16) and small.codes_.size == 0
    with pytest.raises(InputError, match="max_memory_mb"):
        create("patchcore", extractor, max_memory_mb=0)


def test_pq_scores_the_same_after_save_and_load(fitted, tmp_path: Path) -> None:
    pq, res = fitted["pq"]
    again = load(pq.save(tmp_path / "m"))
    assert _is_pq(again) and again.bank_.shape == (0, 152)
    picked = [0, 8, 17, 22]  # colour (0-16) and good (17-22) images
    got = again.score([fitted["paths"][i] for i in picked], progress=False)
    np.testing.assert_array_equal(got.scores, res.scores[picked])
    np.testing.assert_array_equal(np.stack(got.maps.grids), np.stack(res.maps.grids)[picked])
    assert again.threshold_ == pq.threshold_


def test_models_saved_before_pq_banks_still_load(fitted, extractor: FeatureExtractor) -> None:
    exact, res = fitted["exact"]
    old = {k: v for k, v in exact.state_dict().items() if k not in ("codes", "codebook")}
    again = create("patchcore", extractor)
    again.load_state_dict(old)
    again.threshold_ = exact.threshold_
    assert again.codes_.shape == (0, 0) and again.bank_.shape == exact.bank_.shape
    np.testing.assert_array_equal(again.score(fitted["paths"][:2], progress=False).scores, res.scores[:2])


def test_corrupt_pq_codes_are_refused(fitted, extractor: FeatureExtractor, tmp_path: Path) -> None:
    pq, _ = fitted["pq"]
    d = pq.save(tmp_path / "m")
    state = load_file(str(d / MODEL_TENSORS))
    codes = state["codes"].clone()
    state["codes"][0, 0] = 200  # a cell number past the 56 cells
    save_file(state, str(d / MODEL_TENSORS))
    with pytest.raises(InputError, match="PQ codes name cell 200, of 56 cells"):
        load(d)
    fresh = create("patchcore", extractor)
    for bad in (codes[:, :5], codes.float()):  # a row too short; not bytes
        with pytest.raises(ValueError, match=r"PQ codes \(2195, \d+\) \((uint8|float32)\) do not fit"):
            fresh.load_state_dict({**state, "codes": bad.contiguous()})
    with pytest.raises(ValueError, match="PQ codebook"):
        fresh.load_state_dict({**state, "codes": codes, "codebook": state["codebook"][:, :, :2].contiguous()})


def test_pq_scores_do_not_depend_on_the_batch(fitted) -> None:
    det, res = fitted["pq"]  # scored in one batch of 23
    paths = fitted["paths"]
    picked = [0, 8, 17, 22]  # colour and good images, first and last of the batch
    alone = [det.score([paths[i]], progress=False) for i in picked]
    np.testing.assert_array_equal(np.concatenate([r.scores for r in alone]), res.scores[picked])
    np.testing.assert_array_equal(np.stack([r.maps.grids[0] for r in alone]), np.stack(res.maps.grids)[picked])


def test_pq_auroc_close_to_exact(fitted) -> None:
    """Measured: image AUROC 1.0 both, pixel AUROC 0.9876 both, patch maps correlate at 0.986.

    Both separate the 6 good from the 17 colour images with a wide gap (lowest colour score 43.3 exact, 44.0
    PQ; highest good 29.0, 28.0), so PQ may lose at most two of the 102 pairs, and 0.01 of pixel AUROC.
    """
    ds, y = fitted["ds"], np.array([s.label for s in fitted["ds"].test])
    (_, exact), (_, pq) = fitted["exact"], fitted["pq"]
    m_exact = evaluate(y, exact.scores, *pixel_inputs(ds.test, exact))
    m_pq = evaluate(y, pq.scores, *pixel_inputs(ds.test, pq))
    assert m_exact["image_auroc"] >= 0.99, m_exact
    assert m_pq["image_auroc"] >= m_exact["image_auroc"] - 0.02, (m_pq, m_exact)
    assert abs(m_pq["pixel_auroc"] - m_exact["pixel_auroc"]) <= 0.01, (m_pq, m_exact)
    a, b = np.stack(exact.maps.grids).ravel(), np.stack(pq.maps.grids).ravel()
    assert np.corrcoef(a, b)[0, 1] >= 0.95
