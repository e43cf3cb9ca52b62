"""EfficientAD: training, determinism, model files, Ctrl-C, bad input, maps, no backbone at scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from normalcy.detectors import load
from normalcy.detectors.efficientad import EfficientAD
from normalcy.detectors.networks import pdn_tiny
from normalcy.images.features import FeatureExtractor
from normalcy.images.io import load_dataset
from normalcy.images.synthetic import synthetic_images

# Tiny settings: the same shapes in every test, so oneDNN's one-time set-up is paid once.
TINY = dict(steps=16, teacher_steps=6, time_budget=None, input_size=64, pool_size=8, train_batch=4)


@pytest.fixture(scope="module")
def fe() -> FeatureExtractor:
    return FeatureExtractor(image_size=64)


@pytest.fixture(scope="module")
def data(synthetic_root: Path):
    ds = load_dataset(synthetic_root)
    return ds.train, [s.path for s in ds.test]


@pytest.fixture(scope="module")
def fitted(fe: FeatureExtractor, data) -> EfficientAD:
    return EfficientAD(fe, seed=3, **TINY).fit(data[0], progress=False)


def test_pdn_tiny_and_synthetic_image_shapes() -> None:
    assert pdn_tiny(32)(torch.zeros(1, 3, 256, 256)).shape == (1, 32, 32, 32)
    im = synthetic_images(3, 64, torch.Generator().manual_seed(0))
    assert im.shape == (3, 3, 64, 64) and 0 <= float(im.min()) and float(im.max()) <= 1


def test_loss_falls(fitted: EfficientAD) -> None:
    losses = fitted.train_log_.losses
    assert len(losses) == TINY["steps"] and fitted.train_log_.stopped_by == "steps"
    assert losses[-1] < losses[0]
    assert fitted.teacher_log_.steps == TINY["teacher_steps"]


def test_fit_says_the_teacher_distils_before_the_steps(fe: FeatureExtractor, data, caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``--steps 20`` fitted for minutes without a word (the teacher's 2000 steps or 40 % of the budget first)."""
    def stop(*a, **k):  # the note comes before distillation: nothing after it is needed here
        raise RuntimeError("stopped before distilling")

    monkeypatch.setattr(EfficientAD, "_distil", stop)
    kw = {**TINY, "steps": 1, "teacher_steps": 1, "time_budget": 600.0}
    with caplog.at_level("INFO", logger="normalcy"), pytest.raises(RuntimeError, match="stopped before distilling"):
        EfficientAD(fe, **kw).fit(data[0][:4], progress=False)
    assert "its teacher distils first, for up to 1 steps (teacher_steps) or 240 s (0.4 of the time budget); " \
           "then the student trains for 1 steps (steps) or the time left" in caplog.text  # Python's argument


def test_report_names_the_input_efficientad_scores(fe: FeatureExtractor) -> None:
    from normalcy.detectors.base import report_info

    info = report_info(EfficientAD(fe, **TINY))
    assert info["input"] == "64x64 px, then 64x64 px for its own networks (input_size)"
    assert info["backbone"].endswith("(not run when scoring)")


def test_maps_have_original_shape(fitted: EfficientAD, data, tmp_path: Path) -> None:
    from conftest import texture
    from PIL import Image

    odd = tmp_path / "odd.png"
    Image.fromarray(texture(np.random.default_rng(1), 77, 131)).save(odd)
    res = fitted.score([*data[1][:2], odd], progress=False)
    assert [m.shape for m in res.maps] == [(96, 96), (96, 96), (77, 131)]
    assert np.isfinite(res.scores).all() and all(np.isfinite(m).all() for m in res.maps)


def test_scoring_does_not_run_the_backbone(fitted: EfficientAD, data, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a, **k):
        raise AssertionError("the backbone ran during scoring")

    monkeypatch.setattr(fitted.extractor.backbone, "forward", boom)
    res = fitted.score(data[1], progress=False)
    assert len(res.scores) == len(data[1])


def test_save_load_round_trip(fitted: EfficientAD, data, tmp_path: Path) -> None:
    before = fitted.score(data[1], progress=False)
    fitted.save(tmp_path / "m")
    assert not any(p.suffix in (".pkl", ".pt", ".pth") for p in (tmp_path / "m").iterdir())
    det = load(tmp_path / "m")
    assert isinstance(det, EfficientAD) and det.params() == fitted.params()
    after = det.score(data[1], progress=False)
    np.testing.assert_array_equal(before.scores, after.scores)
    for a, b in zip(before.maps, after.maps):
        np.testing.assert_array_equal(a, b)
    assert after.threshold == before.threshold


@pytest.mark.parametrize("name, value, words", [
    ("t_mean", torch.tensor(0.5), r"tensor 't_mean' has shape \(\), expected \(1, \d+, 1, 1\)"),
    ("t_std", torch.ones(1, 1, 1, 1), r"tensor 't_std' has shape \(1, 1, 1, 1\), expected"),
    ("t_std", None, "tensor 't_std' has a standard deviation <= 0"),
])
def test_teacher_statistics_of_a_crafted_shape_are_refused(fitted: EfficientAD, tmp_path: Path, name: str,
                                                             value: torch.Tensor | None, words: str) -> None:
    """A single number for the teacher's per-channel mean or std broadcast over every channel: the model loaded
    and scored, wrongly, without a word. A std <= 0 turned the teacher's features around."""
    from safetensors.torch import load_file, save_file

    from normalcy.errors import InputError

    d = fitted.save(tmp_path / "m")
    state = load_file(str(d / "model.safetensors"))
    state[name] = -state[name] if value is None else value
    save_file(state, str(d / "model.safetensors"))
    with pytest.raises(InputError, match=r"model\.safetensors: does not fit a efficientad model: " + words):
        load(d)


def test_same_seed_same_scores(fitted: EfficientAD, fe: FeatureExtractor, data) -> None:
    again = EfficientAD(fe, seed=3, **TINY).fit(data[0], progress=False)
    np.testing.assert_array_equal(fitted.score(data[1], progress=False).scores,
                                  again.score(data[1], progress=False).scores)
    assert again.threshold_ == fitted.threshold_


@pytest.mark.parametrize("at_call", [3, TINY["teacher_steps"] + 3], ids=["distillation", "student"])
def test_ctrl_c_keeps_a_usable_model(at_call: int, fe: FeatureExtractor, data, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = torch.optim.Adam.step

    def step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == at_call:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    det = EfficientAD(fe, seed=1, **TINY).fit(data[0], progress=False)
    assert det.train_log_.interrupted and det.train_log_.stopped_by == "interrupt"
    if at_call == 3:
        assert det.teacher_log_.steps == 2 and det.teacher_log_.interrupted
        assert 1 <= det.train_log_.steps <= 50
    else:
        assert det.teacher_log_.steps == TINY["teacher_steps"] and det.train_log_.steps == 2
    res = det.score(data[1], progress=False)
    assert np.isfinite(res.scores).all() and det.threshold_ is not None
    det.save(tmp_path / "m")
    np.testing.assert_array_equal(load(tmp_path / "m").score(data[1], progress=False).scores, res.scores)


def test_bad_files_are_skipped(fe: FeatureExtractor, data, tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    det = EfficientAD(fe, **{**TINY, "steps": 3, "teacher_steps": 2}).fit([empty, *data[0], text], progress=False)
    assert {p for p, _ in det.skipped_fit_} == {empty, text}
    res = det.score([data[1][0], text, data[1][1]], progress=False)
    assert res.paths == [data[1][0], data[1][1]]
    assert [p for p, _ in res.skipped] == [text]


def test_bad_parameters() -> None:
    from normalcy.errors import InputError

    with pytest.raises(InputError):
        EfficientAD(input_size=100)


def test_score_is_the_mean_of_the_normalised_branch_maps(fitted: EfficientAD, fe: FeatureExtractor, data) -> None:
    """The paper's combination: each map normalised by its q_a / q_b quantiles on held-out normal images
    (q_a -> 0, q_b -> 0.1), then averaged; the image score is the maximum."""
    from normalcy.images.io import read_image

    paths = data[1][:3]
    x = fe.preprocess([read_image(p) for p in paths])
    scoring = fitted.scoring()
    st, ae = scoring.branches(x)
    raw_st, raw_ae = scoring.raw_maps(scoring.resize(x))
    qa_st, qb_st, qa_ae, qb_ae = (float(v) for v in fitted.quantiles_)
    assert torch.allclose(st, 0.1 * (raw_st - qa_st) / (qb_st - qa_st), atol=1e-5)
    assert torch.allclose(ae, 0.1 * (raw_ae - qa_ae) / (qb_ae - qa_ae), atol=1e-5)
    res = fitted.score(paths, progress=False)
    np.testing.assert_allclose(res.scores, (0.5 * st + 0.5 * ae).amax((1, 2)).numpy(), rtol=1e-4, atol=1e-5)
